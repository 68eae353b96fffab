// Forwarding header (kept for one release): moved to grphi/core/quantize.hpp.
#pragma once

#include "core/quantize.hpp"

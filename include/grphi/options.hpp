// Forwarding header (kept for one release): moved to grphi/core/options.hpp.
#pragma once

#include "core/options.hpp"

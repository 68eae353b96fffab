// Forwarding header (kept for one release): moved to grphi/core/packed.hpp.
#pragma once

#include "core/packed.hpp"

// Forwarding header (kept for one release): moved to grphi/core/levels.hpp.
#pragma once

#include "core/levels.hpp"

// Forwarding header (kept for one release): moved to grphi/core/error.hpp.
#pragma once

#include "core/error.hpp"

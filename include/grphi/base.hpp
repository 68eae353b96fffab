// Forwarding header (kept for one release): moved to grphi/core/base.hpp.
#pragma once

#include "core/base.hpp"

// Forwarding header (kept for one release): moved to grphi/core/continuous.hpp.
#pragma once

#include "core/continuous.hpp"

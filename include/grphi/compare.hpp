// Forwarding header (kept for one release): moved to grphi/baselines/compare.hpp.
#pragma once

#include "baselines/compare.hpp"

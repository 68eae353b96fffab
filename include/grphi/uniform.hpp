// Forwarding header (kept for one release): moved to grphi/baselines/uniform.hpp.
#pragma once

#include "baselines/uniform.hpp"

// Forwarding header (kept for one release): moved to grphi/baselines/kmeans.hpp.
#pragma once

#include "baselines/kmeans.hpp"

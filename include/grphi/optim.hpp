// Forwarding header (kept for one release): moved to grphi/train/optim.hpp.
#pragma once

#include "train/optim.hpp"

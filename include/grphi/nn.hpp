// Forwarding header (kept for one release): moved to grphi/train/nn.hpp.
#pragma once

#include "train/nn.hpp"

// Forwarding header (kept for one release): moved to grphi/train/fashion_mnist.hpp.
#pragma once

#include "train/fashion_mnist.hpp"

// Forwarding header (kept for one release): moved to grphi/io/npy.hpp.
#pragma once

#include "io/npy.hpp"

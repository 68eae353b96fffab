// Forwarding header (kept for one release): moved to grphi/compute/code_matrix.hpp.
#pragma once

#include "compute/code_matrix.hpp"

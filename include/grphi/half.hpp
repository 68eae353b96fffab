// Forwarding header (kept for one release): moved to grphi/io/half.hpp.
#pragma once

#include "io/half.hpp"

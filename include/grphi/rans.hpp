// Forwarding header (kept for one release): moved to grphi/coding/rans.hpp.
#pragma once

#include "coding/rans.hpp"

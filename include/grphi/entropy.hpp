// Forwarding header (kept for one release): moved to grphi/coding/entropy.hpp.
#pragma once

#include "coding/entropy.hpp"

// Forwarding header (kept for one release): moved to grphi/io/safetensors.hpp.
#pragma once

#include "io/safetensors.hpp"

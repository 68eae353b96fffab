// Forwarding header (kept for one release): moved to grphi/format/container.hpp.
#pragma once

#include "format/container.hpp"

// Forwarding header (kept for one release): moved to grphi/io/mapped_file.hpp.
#pragma once

#include "io/mapped_file.hpp"

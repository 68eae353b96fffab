// Forwarding header (kept for one release): moved to grphi/io/output_file.hpp.
#pragma once

#include "io/output_file.hpp"

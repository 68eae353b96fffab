// The exceptions grphi's readers and writers throw; the message names the file, section or field at fault.
#pragma once

#include <stdexcept>

namespace grphi {

// Bytes that are not what their format says they are (truncated, corrupted, forged, wrong version).
struct format_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An operating-system failure (open, read, write, rename), with the path and strerror.
struct io_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace grphi

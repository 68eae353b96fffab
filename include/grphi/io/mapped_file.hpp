// A read-only view of a whole file: memory-mapped (POSIX mmap), or read into memory when mapping fails.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace grphi {

namespace detail {
inline std::string errno_text(int error) { return std::strerror(error); }

// Closes a descriptor on every path out of a function.
class fd_guard {
public:
    explicit fd_guard(int fd) noexcept : fd_(fd) {}
    ~fd_guard() {
        if (fd_ >= 0) ::close(fd_);
    }
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    int get() const noexcept { return fd_; }

private:
    int fd_;
};
}  // namespace detail

class mapped_file {
public:
    mapped_file() = default;

    explicit mapped_file(const std::string& path) : path_(path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw io_error(path + ": cannot open: " + detail::errno_text(errno));
        detail::fd_guard guard(fd);
        struct stat info {};
        if (::fstat(fd, &info) != 0) throw io_error(path + ": cannot stat: " + detail::errno_text(errno));
        if (S_ISDIR(info.st_mode)) throw io_error(path + ": is a directory");
        if (S_ISREG(info.st_mode)) {
            size_ = static_cast<std::size_t>(info.st_size);
            if (size_ == 0) return;  // mmap rejects length 0; an empty view needs no memory
            void* address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (address != MAP_FAILED) {
                mapping_ = static_cast<const std::byte*>(address);
                return;
            }
        }
        read_all(fd);  // pipes, special files, or a refused mapping: fall back to reading
    }

    ~mapped_file() { unmap(); }

    mapped_file(mapped_file&& other) noexcept { *this = std::move(other); }
    mapped_file& operator=(mapped_file&& other) noexcept {
        if (this != &other) {
            unmap();
            path_ = std::move(other.path_);
            mapping_ = std::exchange(other.mapping_, nullptr);
            size_ = std::exchange(other.size_, 0);
            buffer_ = std::move(other.buffer_);
        }
        return *this;
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;

    const std::byte* data() const noexcept { return mapping_ ? mapping_ : buffer_.data(); }
    std::size_t size() const noexcept { return size_; }
    const std::string& path() const noexcept { return path_; }
    bool is_mapped() const noexcept { return mapping_ != nullptr; }

    // Hint that [offset, offset+length) will be read front to back (more read-ahead).
    void advise_sequential(std::size_t offset, std::size_t length) const noexcept {
        advise(offset, length, MADV_SEQUENTIAL, false);
    }
    // Fault [offset, offset+length) in with one call before reading it (cheaper than a fault per page);
    // a no-op where the kernel lacks MADV_POPULATE_READ.
    void prefetch(std::size_t offset, std::size_t length) const noexcept {
#ifdef MADV_POPULATE_READ
        advise(offset, length, MADV_POPULATE_READ, false);
#else
        advise(offset, length, MADV_WILLNEED, false);
#endif
    }
    // Drop the pages wholly inside [offset, offset+length) from this process: keeps the resident set
    // bounded while streaming through a file larger than memory. The data stays readable (re-faulted).
    void release(std::size_t offset, std::size_t length) const noexcept { advise(offset, length, MADV_DONTNEED, true); }

private:
    void advise(std::size_t offset, std::size_t length, int advice, bool inner_pages_only) const noexcept {
        if (!mapping_ || offset >= size_) return;
        if (length > size_ - offset) length = size_ - offset;
        const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        std::size_t first = inner_pages_only ? (offset + page - 1) / page * page : offset / page * page;
        std::size_t last = offset + length;
        if (inner_pages_only && last != size_) last = last / page * page;  // the last page may hold more data
        if (last <= first) return;
        ::madvise(const_cast<std::byte*>(mapping_) + first, last - first, advice);
    }

    void read_all(int fd) {
        std::vector<std::byte> bytes;
        std::size_t used = 0;
        for (;;) {
            if (used == bytes.size()) bytes.resize(bytes.empty() ? (std::size_t{1} << 16) : bytes.size() * 2);
            const ssize_t got = ::read(fd, bytes.data() + used, bytes.size() - used);
            if (got < 0) {
                if (errno == EINTR) continue;
                throw io_error(path_ + ": cannot read: " + detail::errno_text(errno));
            }
            if (got == 0) break;
            used += static_cast<std::size_t>(got);
        }
        bytes.resize(used);
        bytes.shrink_to_fit();
        buffer_ = std::move(bytes);
        size_ = used;
    }

    void unmap() noexcept {
        if (mapping_) ::munmap(const_cast<std::byte*>(mapping_), size_);
        mapping_ = nullptr;
        size_ = 0;
        buffer_.clear();
    }

    std::string path_;
    const std::byte* mapping_ = nullptr;
    std::size_t size_ = 0;
    std::vector<std::byte> buffer_;
};

}  // namespace grphi

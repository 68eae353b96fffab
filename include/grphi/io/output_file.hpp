// An output file that appears all at once: written to a temporary beside the target, renamed on commit,
// removed if anything fails first, so readers never see a partial file.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapped_file.hpp"

namespace grphi {

class output_file {
public:
    static constexpr std::size_t buffer_size = std::size_t{1} << 20;

    explicit output_file(std::string path) : path_(std::move(path)) {
        temp_path_ = path_ + ".tmp-XXXXXX";
        std::vector<char> name(temp_path_.begin(), temp_path_.end());
        name.push_back('\0');
        const int fd = ::mkstemp(name.data());
        if (fd < 0) throw io_error(path_ + ": cannot create output: " + detail::errno_text(errno));
        temp_path_.assign(name.data());
        // mkstemp makes the file 0600; give it the permissions a plain create would have had.
        const mode_t mask = ::umask(0);
        ::umask(mask);
        ::fchmod(fd, static_cast<mode_t>(0666 & ~mask));
        stream_ = ::fdopen(fd, "wb");
        if (!stream_) {
            const int error = errno;
            ::close(fd);
            ::unlink(temp_path_.c_str());
            throw io_error(path_ + ": cannot open output: " + detail::errno_text(error));
        }
        buffer_.resize(buffer_size);
        std::setvbuf(stream_, buffer_.data(), _IOFBF, buffer_.size());
    }

    ~output_file() { discard(); }
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;

    void write(const void* data, std::size_t bytes) {
        if (!stream_) throw io_error(path_ + ": write after the output was closed");
        if (sized_) throw std::logic_error(path_ + ": streaming write after set_size: use write_at");
        if (bytes != 0 && std::fwrite(data, 1, bytes, stream_) != bytes) {
            const int error = errno;
            discard();
            throw io_error(path_ + ": cannot write: " + detail::errno_text(error));
        }
        written_ += bytes;
    }

    // Random access from here on: the file becomes `size` bytes long (what was streamed stays, the rest
    // reads as zeros until written), write() is refused, and write_at may fill any range below `size`,
    // from several threads at once. The blocks are reserved (fallocate) where the file system can, so a
    // full disk or RLIMIT_FSIZE is reported here, before any data is computed.
    void set_size(std::uint64_t size) {
        if (!stream_) throw io_error(path_ + ": set_size after the output was closed");
        if (size < written_) throw std::logic_error(path_ + ": set_size below the bytes already written");
        const int fd = ::fileno(stream_);
        auto fail = [&](int error) {
            discard();
            throw io_error(path_ + ": cannot make the output " + std::to_string(size) + " bytes long: " +
                           detail::errno_text(error));
        };
        if (std::fflush(stream_) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) fail(errno);
#if defined(__linux__)
        // Reserved blocks also make the positioned writes cheaper (ext4: half the system time of writes
        // into a hole, scripts/bench_cli). A file system without fallocate just writes into the hole.
        if (size > written_ && ::fallocate(fd, 0, static_cast<off_t>(written_), static_cast<off_t>(size - written_)) != 0 &&
            errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
            fail(errno);
#endif
        written_ = static_cast<std::size_t>(size);
        sized_ = true;
    }

    // Overwrites bytes already written (or, after set_size, any bytes below the size), from `offset` on.
    // Streaming: fills in a header whose room was reserved first; a failure removes the temporary.
    // After set_size: thread-safe (one positioned write each); a failure throws and leaves the temporary
    // to the owner, which removes it as it unwinds.
    void write_at(std::size_t offset, const void* data, std::size_t bytes) {
        if (!stream_) throw io_error(path_ + ": write after the output was closed");
        if (offset > written_ || bytes > written_ - offset) throw io_error(path_ + ": write_at past the written bytes");
        if (!sized_ && std::fflush(stream_) != 0) {
            const int error = errno;
            discard();
            throw io_error(path_ + ": cannot write: " + detail::errno_text(error));
        }
        const auto* p = static_cast<const char*>(data);
        while (bytes != 0) {
            const ssize_t done = ::pwrite(::fileno(stream_), p, bytes, static_cast<off_t>(offset));
            if (done < 0 && errno == EINTR) continue;
            if (done <= 0) {
                const int error = done == 0 ? EIO : errno;
                if (!sized_) discard();
                throw io_error(path_ + ": cannot write: " + detail::errno_text(error));
            }
            p += done;
            offset += static_cast<std::size_t>(done);
            bytes -= static_cast<std::size_t>(done);
        }
    }

    std::size_t written() const { return written_; }
    const std::string& path() const { return path_; }

    // Flush, close and move into place; after this the file is the target. With `durable` the data
    // reach the disk (fsync) before the rename, so a crash cannot leave a renamed but empty file.
    void commit(bool durable = false) {
        if (!stream_) throw io_error(path_ + ": output already closed");
        std::FILE* stream = stream_;
        stream_ = nullptr;
        if (std::fflush(stream) != 0 || std::ferror(stream) || (durable && ::fsync(::fileno(stream)) != 0)) {
            const int error = errno;
            std::fclose(stream);
            ::unlink(temp_path_.c_str());
            throw io_error(path_ + ": cannot write: " + detail::errno_text(error));
        }
        if (std::fclose(stream) != 0) {
            const int error = errno;
            ::unlink(temp_path_.c_str());
            throw io_error(path_ + ": cannot write: " + detail::errno_text(error));
        }
        if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
            const int error = errno;
            ::unlink(temp_path_.c_str());
            throw io_error(path_ + ": cannot rename the finished output into place: " + detail::errno_text(error));
        }
        committed_ = true;
    }

    // Drop the temporary; the target is left untouched.
    void discard() noexcept {
        if (stream_) {
            std::fclose(stream_);
            stream_ = nullptr;
        }
        if (!committed_ && !temp_path_.empty()) {
            ::unlink(temp_path_.c_str());
            temp_path_.clear();
        }
    }

private:
    std::string path_;
    std::string temp_path_;
    std::FILE* stream_ = nullptr;
    std::vector<char> buffer_;
    std::size_t written_ = 0;
    bool committed_ = false;
    bool sized_ = false;     // set_size was called: random access
};

}  // namespace grphi

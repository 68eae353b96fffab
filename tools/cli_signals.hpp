// An interrupted run leaves no temporary behind: SIGINT, SIGTERM and SIGHUP are taken by a watcher thread
// that removes this process's open "<output>.tmp-*" files, then dies of the same signal; SIGXFSZ is ignored
// so an over-large write fails like any other (the writer then removes its temporary itself).
#pragma once

#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

namespace grphi::cli {

class temporary_cleanup {
public:
    // Call first in main, before any other thread exists: the threads made later inherit the blocked signals.
    static void install() {
        std::signal(SIGXFSZ, SIG_IGN);
        sigset_t set = watched();
        ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
        std::thread(watch).detach();
    }

    // Temporaries of `output` ("<output>.tmp-XXXXXX") are removed on a signal. `output` may be a prefix of
    // several outputs ("dir/model-" for shards).
    static void protect(const std::string& output) {
        std::string absolute = output;
        const std::size_t slash = output.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : output.substr(0, slash == 0 ? 1 : slash);
        char resolved[PATH_MAX];
        if (::realpath(dir.c_str(), resolved))
            absolute = std::string(resolved) + (std::strcmp(resolved, "/") == 0 ? "" : "/") +
                       (slash == std::string::npos ? output : output.substr(slash + 1));
        std::lock_guard<std::mutex> lock(mutex());
        prefixes().push_back(absolute);
    }

private:
    static sigset_t watched() {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        return set;
    }
    static std::mutex& mutex() {
        static std::mutex m;
        return m;
    }
    static std::vector<std::string>& prefixes() {
        static std::vector<std::string> p;
        return p;
    }

    // Files this process has open whose path is "<protected prefix>...tmp-...": our temporaries only.
    static void remove_temporaries() {
        std::lock_guard<std::mutex> lock(mutex());
        DIR* fds = ::opendir("/proc/self/fd");
        if (!fds) return;
        while (const dirent* entry = ::readdir(fds)) {
            char target[PATH_MAX];
            const std::string link = std::string("/proc/self/fd/") + entry->d_name;
            const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
            if (n <= 0) continue;
            const std::string path(target, static_cast<std::size_t>(n));
            for (const auto& prefix : prefixes())
                if (path.rfind(prefix, 0) == 0 && path.find(".tmp-", prefix.size()) != std::string::npos) {
                    ::unlink(path.c_str());
                    break;
                }
        }
        ::closedir(fds);
    }

    static void watch() {
        sigset_t set = watched();
        int signal = 0;
        while (::sigwait(&set, &signal) != 0) {
        }
        remove_temporaries();
        // Die of the signal, as the caller expects (a shell reports "Interrupted", make stops, ...).
        std::signal(signal, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signal);
        ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
        ::raise(signal);
        std::_Exit(128 + signal);
    }
};

}  // namespace grphi::cli

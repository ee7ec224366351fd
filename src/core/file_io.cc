#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace fkv {
namespace {

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string os_reason() { return std::strerror(errno); }

}  // namespace

Expected<std::string> read_text_file(const std::string& path, const std::string& what,
                                     bool allow_empty) {
  if (path.empty()) return Status::error(strfmt("%s: the path is empty", what.c_str()));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::error(
        strfmt("cannot open %s '%s': %s", what.c_str(), path.c_str(), os_reason().c_str()));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string reason = os_reason();
    ::close(fd);
    return Status::error(
        strfmt("cannot stat %s '%s': %s", what.c_str(), path.c_str(), reason.c_str()));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status::error(strfmt("%s '%s' is a directory, not a file", what.c_str(), path.c_str()));
  }
  std::string out;
  std::vector<char> buf(1 << 16);
  while (true) {
    const ssize_t got = ::read(fd, buf.data(), buf.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      const std::string reason = os_reason();
      ::close(fd);
      return Status::error(
          strfmt("error reading %s '%s': %s", what.c_str(), path.c_str(), reason.c_str()));
    }
    if (got == 0) break;
    out.append(buf.data(), static_cast<size_t>(got));
  }
  ::close(fd);
  if (!allow_empty && out.empty()) {
    return Status::error(strfmt("%s '%s' is empty", what.c_str(), path.c_str()));
  }
  return out;
}

Status check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) return Status::error(strfmt("%s: the path is empty", what.c_str()));
  if (path.back() == '/') {
    return Status::error(
        strfmt("%s '%s' names a directory, not a file", what.c_str(), path.c_str()));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Status::error(
          strfmt("%s '%s' is a directory, not a file", what.c_str(), path.c_str()));
    }
    if (!S_ISREG(st.st_mode)) {
      return Status::error(
          strfmt("%s '%s' is not a regular file (a device, FIFO or socket); fastkv writes "
                 "files atomically and will not replace it",
                 what.c_str(), path.c_str()));
    }
  }
  const std::string dir = parent_dir(path);
  struct stat dst {};
  if (::stat(dir.c_str(), &dst) != 0) {
    return Status::error(strfmt("%s '%s': folder '%s' does not exist: %s", what.c_str(),
                                path.c_str(), dir.c_str(), os_reason().c_str()));
  }
  if (!S_ISDIR(dst.st_mode)) {
    return Status::error(
        strfmt("%s '%s': '%s' is not a folder", what.c_str(), path.c_str(), dir.c_str()));
  }
  // Permission bits do not tell everything (root, read-only mounts, /proc): create and remove
  // the kind of temporary file the write will use.
  std::string probe = path + ".tmp.XXXXXX";
  std::vector<char> tmpl(probe.begin(), probe.end());
  tmpl.push_back('\0');
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    return Status::error(strfmt("%s '%s': cannot create files in folder '%s': %s", what.c_str(),
                                path.c_str(), dir.c_str(), os_reason().c_str()));
  }
  ::close(fd);
  ::unlink(tmpl.data());
  return Status::ok();
}

Status write_file_atomic(const std::string& path, const std::string& content,
                         const std::string& what) {
  FKV_RETURN_IF_ERROR(check_output_path(path, what));
  std::string tmp = path + ".tmp.XXXXXX";
  std::vector<char> tmpl(tmp.begin(), tmp.end());
  tmpl.push_back('\0');
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    return Status::error(strfmt("cannot create a temporary file beside %s '%s': %s", what.c_str(),
                                path.c_str(), os_reason().c_str()));
  }
  tmp.assign(tmpl.data());
  auto fail = [&](const char* step) {
    const std::string reason = os_reason();
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::error(
        strfmt("cannot write %s '%s' (%s): %s", what.c_str(), path.c_str(), step, reason.c_str()));
  };
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    done += static_cast<size_t>(n);
  }
  // mkstemp makes the file 0600; an output file gets the usual 0666 & ~umask.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0666 & ~mask) != 0) return fail("chmod");
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    const std::string reason = os_reason();
    ::unlink(tmp.c_str());
    return Status::error(
        strfmt("cannot write %s '%s' (close): %s", what.c_str(), path.c_str(), reason.c_str()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = os_reason();
    ::unlink(tmp.c_str());
    return Status::error(
        strfmt("cannot write %s '%s' (rename): %s", what.c_str(), path.c_str(), reason.c_str()));
  }
  // The rename is durable once the folder's entry is on disk.
  const int dfd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

}  // namespace fkv

// Every file fastkv reads as text and every file it writes goes through here, so that a bad path
// gets one clear message (a directory, empty, unreadable, with the OS reason) and no output file
// is ever left half-written.
#pragma once

#include <string>

#include "core/status.h"

namespace fkv {

// Whole file into a string (prompts, JSON, templates). `what` names the file in messages
// ("--prompt-file", "chat template"); a directory, a missing or unreadable path, and (unless
// allow_empty) an empty file are errors.
Expected<std::string> read_text_file(const std::string& path, const std::string& what = "file",
                                     bool allow_empty = true);

// Checks, before any work starts, that write_file_atomic(path, ...) can succeed: the folder
// exists and is writable, and `path` is not a directory or a special file (device, FIFO).
Status check_output_path(const std::string& path, const std::string& what = "output file");

// Writes `content` to a temporary file beside `path`, fsyncs it, renames it over `path` and
// fsyncs the folder: readers see the old file or the whole new one, never a part. On failure the
// previous file is untouched and the temporary is removed.
Status write_file_atomic(const std::string& path, const std::string& content,
                         const std::string& what = "output file");

}  // namespace fkv

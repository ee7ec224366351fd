// safetensors reader: header validated against the file, tensor data borrowed from an mmap.
// Single files and sharded checkpoints (model.safetensors.index.json) load the same way.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mmap_file.h"
#include "core/status.h"

namespace fkv {

struct SafetensorsTensor {
  std::string name;
  std::string file;  // path of the file holding it (for error messages)
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major, as written by torch
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;
  int64_t n_elements() const;
};

class SafetensorsArchive {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json, or a folder holding either.
  static Expected<SafetensorsArchive> open(const std::string& path);
  const SafetensorsTensor* find(const std::string& name) const;
  const std::map<std::string, SafetensorsTensor>& tensors() const { return tensors_; }
  const std::vector<std::string>& files() const { return files_; }
  // Adds the tensors of one file (duplicates across shards are an error).
  Status add_file(const std::string& path);

 private:
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::vector<std::string> files_;
  std::map<std::string, SafetensorsTensor> tensors_;
};

// Parses the header of an in-memory safetensors image (used by add_file and the fuzzer).
Status parse_safetensors(const uint8_t* data, size_t size, const std::string& file_name,
                         std::map<std::string, SafetensorsTensor>& out);

}  // namespace fkv

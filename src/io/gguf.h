// GGUF reader (v2/v3): metadata key/values and tensor descriptors over a memory map.
// Tensor data is borrowed from the map; nothing is copied. Every offset and size is validated
// against the file size, so a truncated or corrupt file gives an error naming the file/key/tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/mmap_file.h"
#include "core/status.h"

namespace fkv {

// One metadata value. Arrays hold homogeneous scalars or strings.
struct GgufValue {
  enum class Type : uint32_t {
    kU8 = 0,
    kI8 = 1,
    kU16 = 2,
    kI16 = 3,
    kU32 = 4,
    kI32 = 5,
    kF32 = 6,
    kBool = 7,
    kString = 8,
    kArray = 9,
    kU64 = 10,
    kI64 = 11,
    kF64 = 12,
  };
  Type type = Type::kU8;
  Type elem_type = Type::kU8;  // for arrays
  // Scalars are widened: integers/bools into i64 (u64 too, bit-cast), floats into f64.
  std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
               std::vector<std::string>>
      value;

  bool is_array() const { return type == Type::kArray; }
};

struct GgufTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> dims;      // ggml order: dims[0] is the contiguous (innermost) dimension
  uint64_t offset = 0;            // relative to the data section
  const uint8_t* data = nullptr;  // into the map
  size_t n_bytes = 0;
  int64_t n_elements() const;
};

class GgufFile {
 public:
  static Expected<GgufFile> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  bool has(const std::string& key) const { return kv_.count(key) != 0; }

  // Typed getters. Errors name the key, the file and the type found.
  Expected<std::string> get_string(const std::string& key) const;
  Expected<int64_t> get_int(const std::string& key) const;   // any integer or bool type
  Expected<double> get_float(const std::string& key) const;  // f32/f64 (integers widened too)
  Expected<std::vector<std::string>> get_string_array(const std::string& key) const;
  Expected<std::vector<int64_t>> get_int_array(const std::string& key) const;
  Expected<std::vector<double>> get_float_array(const std::string& key) const;

  std::shared_ptr<MappedFile> mapping() const { return file_; }

 private:
  friend Expected<GgufFile> parse_gguf(std::shared_ptr<MappedFile> file);
  friend Status parse_gguf_bytes(const uint8_t* data, size_t size, const std::string& name);
  // Parses the image [data, data+size) into `out`; `name` is used in error messages only.
  static Status parse_image(const uint8_t* data, size_t size, const std::string& name,
                            GgufFile* out);
  const GgufValue* find_value(const std::string& key) const;

  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Parses a GGUF image already in memory (used by the fuzzer and by open()).
// `keep_alive` may be null (the fuzzer owns the bytes).
Expected<GgufFile> parse_gguf(std::shared_ptr<MappedFile> file);
Status parse_gguf_bytes(const uint8_t* data, size_t size, const std::string& name);

}  // namespace fkv

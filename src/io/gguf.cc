#include "io/gguf.h"

#include <cinttypes>
#include <cstring>
#include <limits>
#include <utility>

#include "core/utf8.h"

namespace fkv {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747u;  // "GGUF" read as little-endian u32
constexpr uint32_t kMaxDims = 4;              // GGML_MAX_DIMS
// Bound on key / tensor-name length: real files use < 100 bytes; this stops a corrupt length
// from being taken at face value even when the file happens to be large.
constexpr uint64_t kMaxNameLen = 1u << 16;

const char* value_type_name(GgufValue::Type t) {
  switch (t) {
    case GgufValue::Type::kU8:
      return "u8";
    case GgufValue::Type::kI8:
      return "i8";
    case GgufValue::Type::kU16:
      return "u16";
    case GgufValue::Type::kI16:
      return "i16";
    case GgufValue::Type::kU32:
      return "u32";
    case GgufValue::Type::kI32:
      return "i32";
    case GgufValue::Type::kF32:
      return "f32";
    case GgufValue::Type::kBool:
      return "bool";
    case GgufValue::Type::kString:
      return "string";
    case GgufValue::Type::kArray:
      return "array";
    case GgufValue::Type::kU64:
      return "u64";
    case GgufValue::Type::kI64:
      return "i64";
    case GgufValue::Type::kF64:
      return "f64";
  }
  return "unknown";
}

// Bytes of one scalar of type t; 0 for string/array (variable size) or unknown ids.
size_t scalar_size(GgufValue::Type t) {
  switch (t) {
    case GgufValue::Type::kU8:
    case GgufValue::Type::kI8:
    case GgufValue::Type::kBool:
      return 1;
    case GgufValue::Type::kU16:
    case GgufValue::Type::kI16:
      return 2;
    case GgufValue::Type::kU32:
    case GgufValue::Type::kI32:
    case GgufValue::Type::kF32:
      return 4;
    case GgufValue::Type::kU64:
    case GgufValue::Type::kI64:
    case GgufValue::Type::kF64:
      return 8;
    default:
      return 0;
  }
}

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValue::Type::kF64); }
bool is_float_type(GgufValue::Type t) {
  return t == GgufValue::Type::kF32 || t == GgufValue::Type::kF64;
}
bool is_int_type(GgufValue::Type t) { return scalar_size(t) != 0 && !is_float_type(t); }

// Little-endian cursor over the image. Every read checks the bytes left first.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  Status error(const std::string& what) const {
    return Status::error(strfmt("gguf '%s': %s (at byte offset %zu of %zu)", name_.c_str(),
                                what.c_str(), pos_, size_));
  }

  Status bytes(void* dst, size_t n, const char* what) {
    if (n > left()) {
      return error(strfmt("truncated reading %s: need %zu bytes, %zu left", what, n, left()));
    }
    if (n != 0) std::memcpy(dst, data_ + pos_, n);
    pos_ += n;
    return Status::ok();
  }
  template <class T>
  Status scalar(T* v, const char* what) {
    return bytes(v, sizeof(T), what);  // the host is little-endian (x86-64 / aarch64)
  }

  Status string(std::string* s, const std::string& what, uint64_t max_len) {
    uint64_t len = 0;
    FKV_RETURN_IF_ERROR(scalar(&len, what.c_str()));
    if (len > left()) {
      return error(strfmt("%s: string length %" PRIu64 " exceeds the %zu bytes left", what.c_str(),
                          len, left()));
    }
    if (len > max_len) {
      return error(strfmt("%s: string length %" PRIu64 " exceeds the limit %" PRIu64, what.c_str(),
                          len, max_len));
    }
    s->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return Status::ok();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

template <class T>
Status read_widened(Reader& r, int64_t* out, const char* what) {
  T v{};
  FKV_RETURN_IF_ERROR(r.scalar(&v, what));
  *out = static_cast<int64_t>(v);
  return Status::ok();
}

// Reads one scalar of type t widened to i64 (integers, bools; u64 bit-cast).
Status read_int(Reader& r, GgufValue::Type t, int64_t* out, const char* what) {
  switch (t) {
    case GgufValue::Type::kU8:
      return read_widened<uint8_t>(r, out, what);
    case GgufValue::Type::kI8:
      return read_widened<int8_t>(r, out, what);
    case GgufValue::Type::kBool:
      FKV_RETURN_IF_ERROR(read_widened<uint8_t>(r, out, what));
      if (*out > 1)
        return r.error(
            strfmt("%s: bool value %lld is neither 0 nor 1", what, static_cast<long long>(*out)));
      return Status::ok();
    case GgufValue::Type::kU16:
      return read_widened<uint16_t>(r, out, what);
    case GgufValue::Type::kI16:
      return read_widened<int16_t>(r, out, what);
    case GgufValue::Type::kU32:
      return read_widened<uint32_t>(r, out, what);
    case GgufValue::Type::kI32:
      return read_widened<int32_t>(r, out, what);
    case GgufValue::Type::kU64:
      return read_widened<uint64_t>(r, out, what);  // wraps: bit-cast
    case GgufValue::Type::kI64:
      return read_widened<int64_t>(r, out, what);
    default:
      return r.error(strfmt("%s: type %s is not an integer", what, value_type_name(t)));
  }
}

Status read_float(Reader& r, GgufValue::Type t, double* out, const char* what) {
  if (t == GgufValue::Type::kF32) {
    float v = 0;
    FKV_RETURN_IF_ERROR(r.scalar(&v, what));
    *out = v;
  } else {
    double v = 0;
    FKV_RETURN_IF_ERROR(r.scalar(&v, what));
    *out = v;
  }
  return Status::ok();
}

Status read_value(Reader& r, const std::string& key, GgufValue* val) {
  const std::string what = strfmt("key '%s'", escape_for_message(key).c_str());
  uint32_t type_id = 0;
  FKV_RETURN_IF_ERROR(r.scalar(&type_id, what.c_str()));
  if (!is_known_value_type(type_id)) {
    return r.error(strfmt("%s: unknown value type %u", what.c_str(), type_id));
  }
  val->type = static_cast<GgufValue::Type>(type_id);
  if (val->type == GgufValue::Type::kString) {
    std::string s;
    FKV_RETURN_IF_ERROR(r.string(&s, what, std::numeric_limits<uint64_t>::max()));
    val->value = std::move(s);
    return Status::ok();
  }
  if (val->type != GgufValue::Type::kArray) {
    if (is_float_type(val->type)) {
      double d = 0;
      FKV_RETURN_IF_ERROR(read_float(r, val->type, &d, what.c_str()));
      val->value = d;
    } else {
      int64_t i = 0;
      FKV_RETURN_IF_ERROR(read_int(r, val->type, &i, what.c_str()));
      val->value = i;
    }
    return Status::ok();
  }

  uint32_t elem_id = 0;
  uint64_t n = 0;
  FKV_RETURN_IF_ERROR(r.scalar(&elem_id, what.c_str()));
  if (!is_known_value_type(elem_id)) {
    return r.error(strfmt("%s: array of unknown value type %u", what.c_str(), elem_id));
  }
  val->elem_type = static_cast<GgufValue::Type>(elem_id);
  if (val->elem_type == GgufValue::Type::kArray) {
    // llama.cpp rejects these too and no known writer emits them.
    return r.error(strfmt("%s: nested arrays are not supported", what.c_str()));
  }
  FKV_RETURN_IF_ERROR(r.scalar(&n, what.c_str()));
  // Every element takes at least its fixed size (8 bytes of length for a string), so a count the
  // remaining bytes cannot hold is rejected before anything is allocated.
  const size_t min_elem =
      val->elem_type == GgufValue::Type::kString ? 8 : scalar_size(val->elem_type);
  if (n > r.left() / min_elem) {
    return r.error(strfmt("%s: array of %" PRIu64 " %s elements does not fit in the %zu bytes left",
                          what.c_str(), n, value_type_name(val->elem_type), r.left()));
  }
  const size_t count = static_cast<size_t>(n);
  if (val->elem_type == GgufValue::Type::kString) {
    std::vector<std::string> v(count);
    for (size_t i = 0; i < count; ++i) {
      FKV_RETURN_IF_ERROR(r.string(&v[i], strfmt("%s[%zu]", what.c_str(), i),
                                   std::numeric_limits<uint64_t>::max()));
    }
    val->value = std::move(v);
  } else if (is_float_type(val->elem_type)) {
    std::vector<double> v(count);
    for (size_t i = 0; i < count; ++i) {
      FKV_RETURN_IF_ERROR(read_float(r, val->elem_type, &v[i], what.c_str()));
    }
    val->value = std::move(v);
  } else {
    std::vector<int64_t> v(count);
    for (size_t i = 0; i < count; ++i) {
      FKV_RETURN_IF_ERROR(read_int(r, val->elem_type, &v[i], what.c_str()));
    }
    val->value = std::move(v);
  }
  return Status::ok();
}

}  // namespace

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // overflow was ruled out when the file was parsed
  return n;
}

Status GgufFile::parse_image(const uint8_t* data, size_t size, const std::string& name,
                             GgufFile* out) {
  Reader r(data, size, name);
  uint32_t magic = 0;
  FKV_RETURN_IF_ERROR(r.scalar(&magic, "magic"));
  if (magic != kGgufMagic) {
    return Status::error(
        strfmt("gguf '%s': bad magic 0x%08x (expected \"GGUF\")", name.c_str(), magic));
  }
  FKV_RETURN_IF_ERROR(r.scalar(&out->version_, "version"));
  if (out->version_ != 2 && out->version_ != 3) {
    return Status::error(strfmt(
        "gguf '%s': unsupported version %u (fastkv reads v2 and v3%s)", name.c_str(), out->version_,
        out->version_ > 0xffff ? "; big-endian files are not supported" : ""));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  FKV_RETURN_IF_ERROR(r.scalar(&n_tensors, "tensor count"));
  FKV_RETURN_IF_ERROR(r.scalar(&n_kv, "metadata kv count"));
  // Smallest possible kv: 8 (key length) + 4 (type) + 1 (u8 value); smallest tensor info:
  // 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
  if (n_kv > r.left() / 13) {
    return r.error(
        strfmt("metadata kv count %" PRIu64 " cannot fit in the %zu bytes left", n_kv, r.left()));
  }
  if (n_tensors > r.left() / 24) {
    return r.error(
        strfmt("tensor count %" PRIu64 " cannot fit in the %zu bytes left", n_tensors, r.left()));
  }

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    FKV_RETURN_IF_ERROR(r.string(&key, strfmt("metadata key #%" PRIu64, i), kMaxNameLen));
    if (out->kv_.count(key) != 0)
      return r.error(strfmt("duplicate key '%s'", escape_for_message(key).c_str()));
    GgufValue v;
    FKV_RETURN_IF_ERROR(read_value(r, key, &v));
    out->kv_.emplace(std::move(key), std::move(v));
  }

  out->alignment_ = 32;  // GGUF default
  if (auto it = out->kv_.find("general.alignment"); it != out->kv_.end()) {
    const GgufValue& v = it->second;
    if (v.type != GgufValue::Type::kU32) {
      return Status::error(strfmt("gguf '%s': key 'general.alignment' has type %s, expected u32",
                                  name.c_str(), value_type_name(v.type)));
    }
    const int64_t a = std::get<int64_t>(v.value);
    if (a <= 0 || (a & (a - 1)) != 0) {
      return Status::error(strfmt("gguf '%s': key 'general.alignment' = %lld is not a power of two",
                                  name.c_str(), static_cast<long long>(a)));
    }
    out->alignment_ = static_cast<uint32_t>(a);
  }

  out->tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    FKV_RETURN_IF_ERROR(r.string(&t.name, strfmt("tensor #%" PRIu64 " name", i), kMaxNameLen));
    const std::string what = strfmt("tensor '%s'", escape_for_message(t.name).c_str());
    if (out->tensor_index_.count(t.name) != 0) {
      return r.error(strfmt("duplicate %s", what.c_str()));
    }
    uint32_t n_dims = 0;
    FKV_RETURN_IF_ERROR(r.scalar(&n_dims, what.c_str()));
    if (n_dims > kMaxDims) {
      return r.error(strfmt("%s: %u dimensions (at most %u)", what.c_str(), n_dims, kMaxDims));
    }
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      int64_t dim = 0;
      FKV_RETURN_IF_ERROR(r.scalar(&dim, what.c_str()));
      if (dim < 0) {
        return r.error(strfmt("%s: dimension %u is negative (%lld)", what.c_str(), d,
                              static_cast<long long>(dim)));
      }
      if (dim != 0 && n_elems > std::numeric_limits<int64_t>::max() / dim) {
        return r.error(strfmt("%s: element count overflows at dimension %u (%lld)", what.c_str(), d,
                              static_cast<long long>(dim)));
      }
      n_elems *= dim;
      t.dims.push_back(dim);
    }
    uint32_t type_id = 0;
    FKV_RETURN_IF_ERROR(r.scalar(&type_id, what.c_str()));
    t.dtype = static_cast<DType>(type_id);
    const auto info = dtype_info(t.dtype);
    if (!info) return r.error(strfmt("%s: unknown ggml type %u", what.c_str(), type_id));
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % info->block_elems != 0) {
      return r.error(strfmt("%s: row of %lld elements is not a multiple of the %s block size %d",
                            what.c_str(), static_cast<long long>(row), info->name,
                            info->block_elems));
    }
    // n_elems is a multiple of block_elems, so this is exact; bound it before multiplying.
    const uint64_t n_blocks = static_cast<uint64_t>(n_elems / info->block_elems);
    if (n_blocks > std::numeric_limits<uint64_t>::max() / info->block_bytes) {
      return r.error(strfmt("%s: byte size overflows", what.c_str()));
    }
    const uint64_t n_bytes = n_blocks * static_cast<uint64_t>(info->block_bytes);
    FKV_RETURN_IF_ERROR(r.scalar(&t.offset, what.c_str()));
    if (t.offset % out->alignment_ != 0) {
      return r.error(strfmt("%s: data offset %" PRIu64 " is not a multiple of the alignment %u",
                            what.c_str(), t.offset, out->alignment_));
    }
    if (n_bytes > size) {
      return r.error(
          strfmt("%s: %" PRIu64 " bytes of data exceed the file size", what.c_str(), n_bytes));
    }
    t.n_bytes = static_cast<size_t>(n_bytes);
    out->tensor_index_.emplace(t.name, out->tensors_.size());
    out->tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t header_end = r.pos();
  const uint64_t data_start =
      (header_end + out->alignment_ - 1) / out->alignment_ * static_cast<uint64_t>(out->alignment_);
  if (!out->tensors_.empty() && data_start > size) {
    return Status::error(strfmt("gguf '%s': data section starts at %" PRIu64
                                " past the end of the file (%zu bytes)",
                                name.c_str(), data_start, size));
  }
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  for (GgufTensorInfo& t : out->tensors_) {
    // offset and n_bytes are each <= data_size here, so the sum cannot wrap.
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return Status::error(strfmt("gguf '%s': tensor '%s' data [%" PRIu64 ", +%zu) lies outside "
                                  "the %" PRIu64 "-byte data section",
                                  name.c_str(), escape_for_message(t.name).c_str(), t.offset,
                                  t.n_bytes, data_size));
    }
    t.data = data + data_start + t.offset;
  }
  return Status::ok();
}

Expected<GgufFile> parse_gguf(std::shared_ptr<MappedFile> file) {
  if (!file) return Status::error("gguf: null file");
  GgufFile g;
  FKV_RETURN_IF_ERROR(GgufFile::parse_image(file->data(), file->size(), file->path(), &g));
  g.file_ = std::move(file);
  return g;
}

Status parse_gguf_bytes(const uint8_t* data, size_t size, const std::string& name) {
  GgufFile g;
  return GgufFile::parse_image(data, size, name, &g);
}

Expected<GgufFile> GgufFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  if (!file) return file.status();
  return parse_gguf(std::move(file.value()));
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::find_value(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {

std::string file_name(const std::shared_ptr<MappedFile>& f) { return f ? f->path() : "<memory>"; }

Status missing(const std::shared_ptr<MappedFile>& f, const std::string& key) {
  return Status::error(strfmt("gguf '%s': missing key '%s'", file_name(f).c_str(), key.c_str()));
}

Status wrong_type(const std::shared_ptr<MappedFile>& f, const std::string& key, const GgufValue& v,
                  const char* wanted) {
  std::string found = value_type_name(v.type);
  if (v.is_array()) found += strfmt(" of %s", value_type_name(v.elem_type));
  return Status::error(strfmt("gguf '%s': key '%s' has type %s, expected %s", file_name(f).c_str(),
                              key.c_str(), found.c_str(), wanted));
}

}  // namespace

Expected<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (v->type != GgufValue::Type::kString) return wrong_type(file_, key, *v, "string");
  return std::get<std::string>(v->value);
}

Expected<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (!is_int_type(v->type)) return wrong_type(file_, key, *v, "an integer");
  return std::get<int64_t>(v->value);
}

Expected<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (is_float_type(v->type)) return std::get<double>(v->value);
  if (is_int_type(v->type)) {
    const int64_t i = std::get<int64_t>(v->value);
    if (v->type == GgufValue::Type::kU64) return static_cast<double>(static_cast<uint64_t>(i));
    return static_cast<double>(i);
  }
  return wrong_type(file_, key, *v, "a number");
}

Expected<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (!v->is_array() || v->elem_type != GgufValue::Type::kString) {
    return wrong_type(file_, key, *v, "array of string");
  }
  return std::get<std::vector<std::string>>(v->value);
}

Expected<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (!v->is_array() || !is_int_type(v->elem_type)) {
    return wrong_type(file_, key, *v, "array of integers");
  }
  return std::get<std::vector<int64_t>>(v->value);
}

Expected<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find_value(key);
  if (!v) return missing(file_, key);
  if (!v->is_array()) return wrong_type(file_, key, *v, "array of numbers");
  if (is_float_type(v->elem_type)) return std::get<std::vector<double>>(v->value);
  if (is_int_type(v->elem_type)) {
    const auto& ints = std::get<std::vector<int64_t>>(v->value);
    std::vector<double> out(ints.size());
    const bool is_u64 = v->elem_type == GgufValue::Type::kU64;
    for (size_t i = 0; i < ints.size(); ++i) {
      out[i] = is_u64 ? static_cast<double>(static_cast<uint64_t>(ints[i]))
                      : static_cast<double>(ints[i]);
    }
    return out;
  }
  return wrong_type(file_, key, *v, "array of numbers");
}

}  // namespace fkv

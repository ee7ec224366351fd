#include "io/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/json_excerpt.h"

namespace fkv {
namespace fs = std::filesystem;
using json = nlohmann::json;

int64_t SafetensorsTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

std::optional<DType> parse_dtype(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  if (s == "I8") return DType::kI8;
  if (s == "I16") return DType::kI16;
  if (s == "F64") return DType::kF64;
  return std::nullopt;
}

}  // namespace

Status parse_safetensors(const uint8_t* data, size_t size, const std::string& file,
                         std::map<std::string, SafetensorsTensor>& out) {
  if (size < 8) {
    return Status::error(
        strfmt("%s: truncated safetensors file (%zu bytes, need at least 8)", file.c_str(), size));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > size - 8) {
    return Status::error(strfmt("%s: header length %llu runs past the end of the file (%zu bytes)",
                                file.c_str(), static_cast<unsigned long long>(header_len), size));
  }
  const char* hdr = reinterpret_cast<const char*>(data + 8);
  json j = json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::error(strfmt("%s: header is not a valid JSON object", file.c_str()));
  }
  const uint8_t* body = data + 8 + header_len;
  const size_t body_size = size - 8 - header_len;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& t = it.value();
    auto bad = [&](const char* what) {
      return Status::error(strfmt("%s: tensor '%s': %s", file.c_str(), name.c_str(), what));
    };
    if (!t.is_object()) {
      return bad(strfmt("entry must be an object, got %s", json_excerpt(t).c_str()).c_str());
    }
    // A field that is there with the wrong type says what it holds (it is not "missing").
    auto field = [&](const char* key, bool ok, const char* expected) -> Status {
      if (!t.contains(key)) return bad(strfmt("missing field '%s' (%s)", key, expected).c_str());
      if (ok) return Status::ok();
      return bad(
          strfmt("field '%s' must be %s, got %s", key, expected, json_excerpt(t[key]).c_str())
              .c_str());
    };
    FKV_RETURN_IF_ERROR(field("dtype", t.contains("dtype") && t["dtype"].is_string(), "a string"));
    FKV_RETURN_IF_ERROR(
        field("shape", t.contains("shape") && t["shape"].is_array(), "an array of integers"));
    FKV_RETURN_IF_ERROR(field(
        "data_offsets",
        t.contains("data_offsets") && t["data_offsets"].is_array() && t["data_offsets"].size() == 2,
        "an array [begin, end]"));
    const std::string dtype_str = t["dtype"].get<std::string>();
    auto dtype = parse_dtype(dtype_str);
    if (!dtype) {
      return Status::error(
          strfmt("%s: tensor '%s': unsupported dtype '%s' (fastkv reads F32, F16, "
                 "BF16 weights)",
                 file.c_str(), name.c_str(), dtype_str.c_str()));
    }
    SafetensorsTensor tensor;
    tensor.name = name;
    tensor.file = file;
    tensor.dtype = *dtype;
    uint64_t n_elem = 1;
    for (const json& d : t["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && n_elem > (1ull << 50) / dim)) {
        return bad("shape is absurdly large");
      }
      n_elem *= dim;
      tensor.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return bad("data_offsets must be non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>();
    const uint64_t end = off[1].get<uint64_t>();
    if (begin > end || end > body_size) {
      return Status::error(strfmt(
          "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data section is %zu bytes; "
          "file truncated?)",
          file.c_str(), name.c_str(), static_cast<unsigned long long>(begin),
          static_cast<unsigned long long>(end), body_size));
    }
    const uint64_t expect = n_elem * static_cast<uint64_t>(dtype_info(*dtype)->block_bytes);
    if (end - begin != expect) {
      return Status::error(
          strfmt("%s: tensor '%s': %llu bytes of data but shape and dtype %s need %llu",
                 file.c_str(), name.c_str(), static_cast<unsigned long long>(end - begin),
                 dtype_str.c_str(), static_cast<unsigned long long>(expect)));
    }
    tensor.data = body + begin;
    tensor.n_bytes = static_cast<size_t>(end - begin);
    if (out.count(name) != 0) {
      return Status::error(strfmt("%s: tensor '%s' also appears in %s", file.c_str(), name.c_str(),
                                  out[name].file.c_str()));
    }
    out.emplace(name, std::move(tensor));
  }
  return Status::ok();
}

Status SafetensorsArchive::add_file(const std::string& path) {
  auto map = MappedFile::open(path);
  if (!map) return map.status();
  FKV_RETURN_IF_ERROR(parse_safetensors((*map)->data(), (*map)->size(), path, tensors_));
  maps_.push_back(*map);
  files_.push_back(path);
  return Status::ok();
}

const SafetensorsTensor* SafetensorsArchive::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Expected<SafetensorsArchive> SafetensorsArchive::open(const std::string& path_in) {
  fs::path path(path_in);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors.index.json")) {
      path /= "model.safetensors.index.json";
    } else if (fs::exists(path / "model.safetensors")) {
      path /= "model.safetensors";
    } else {
      // Any single *.safetensors file.
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(path, ec)) {
        if (e.path().extension() == ".safetensors") found.push_back(e.path());
      }
      if (found.size() != 1) {
        return Status::error(
            strfmt("%s: no model.safetensors or model.safetensors.index.json "
                   "(found %zu *.safetensors files)",
                   path_in.c_str(), found.size()));
      }
      path = found[0];
    }
  }
  SafetensorsArchive archive;
  if (path.filename().string().ends_with(".index.json")) {
    auto text = read_text_file(path.string());
    if (!text) return text.status();
    json idx = json::parse(*text, nullptr, false);
    if (idx.is_discarded()) return Status::error(strfmt("%s: not valid JSON", path.c_str()));
    if (!idx.is_object()) {
      return Status::error(strfmt("%s: must hold a JSON object with a 'weight_map', got %s",
                                  path.c_str(), json_excerpt(idx).c_str()));
    }
    if (!idx.contains("weight_map")) {
      return Status::error(
          strfmt("%s: missing field 'weight_map' (an object of tensor name -> shard file name)",
                 path.c_str()));
    }
    if (!idx["weight_map"].is_object()) {
      return Status::error(
          strfmt("%s: field 'weight_map' must be an object of tensor name -> shard file name, "
                 "got %s",
                 path.c_str(), json_excerpt(idx["weight_map"]).c_str()));
    }
    std::vector<std::string> shard_names;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return Status::error(
            strfmt("%s: weight_map['%s'] must be a shard file name (a string), got %s",
                   path.c_str(), it.key().c_str(), json_excerpt(it.value()).c_str()));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos) {
        return Status::error(
            strfmt("%s: shard name '%s' must be a plain file name", path.c_str(), shard.c_str()));
      }
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) {
        shard_names.push_back(shard);
      }
    }
    for (const auto& shard : shard_names) {
      FKV_RETURN_IF_ERROR(archive.add_file((path.parent_path() / shard).string()));
    }
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (archive.find(it.key()) == nullptr) {
        return Status::error(strfmt("%s: tensor '%s' listed in weight_map is missing from %s",
                                    path.c_str(), it.key().c_str(),
                                    it.value().get<std::string>().c_str()));
      }
    }
  } else {
    FKV_RETURN_IF_ERROR(archive.add_file(path.string()));
  }
  return archive;
}

}  // namespace fkv

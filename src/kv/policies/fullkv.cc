// fullkv: no compression; the baseline every other method is measured against (spec §4).
#include "kv/policies/common.h"

namespace fkv::kvp {

namespace {
class FullKv final : public KvPolicy {
 public:
  std::string name() const override { return "fullkv"; }
  bool select_kv(const LayerView&, KeepLists&) override { return false; }
};

Expected<std::unique_ptr<KvPolicy>> make_fullkv(const PolicyOptions&, const PolicyModelInfo&) {
  return std::unique_ptr<KvPolicy>(new FullKv());
}

}  // namespace

const MethodInfo kFullKvInfo = {"fullkv", make_fullkv, 0, keeps_every_row, true};

}  // namespace fkv::kvp

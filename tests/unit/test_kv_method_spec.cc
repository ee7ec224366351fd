// The one method-spec parser ("name:key=value,...") and the full-width number parsing under it.
#include <gtest/gtest.h>

#include "core/parse_number.h"
#include "kv/method_spec.h"

namespace fkv {
namespace {

TEST(MethodSpec, ParsesNameAndOptions) {
  auto o = parse_method_spec("fastkv:tsp_rate=0.2,retain_rate=0.1");
  ASSERT_TRUE(o) << o.error();
  EXPECT_EQ(o->method, "fastkv");
  EXPECT_DOUBLE_EQ(*o->tsp_rate, 0.2);
  EXPECT_DOUBLE_EQ(*o->retain_rate, 0.1);
  EXPECT_FALSE(o->tsp_layer.has_value());
  auto plain = parse_method_spec("fullkv");
  ASSERT_TRUE(plain);
  EXPECT_EQ(format_method_spec(*plain), "fullkv");
}

TEST(MethodSpec, AcceptsDashesSpacesAndBooleans) {
  auto o = parse_method_spec(" snapkv: retain-rate = 0.5 , per_query_head=true, pooling=avg");
  ASSERT_TRUE(o) << o.error();
  EXPECT_TRUE(o->per_query_head);
  EXPECT_EQ(*o->pooling, "avg");
  EXPECT_EQ(format_method_spec(*o), "snapkv:retain_rate=0.5,pooling=avg,per_query_head=true");
}

TEST(MethodSpec, FormatRoundTrips) {
  for (const char* spec :
       {"fastkv:tsp_layer=3,tsp_rate=0.25,retain_rate=0.1,window=8,kernel=7,pooling=max",
        "fastkv:tsp_len=100,kv_budget=64,mode=constant", "gemfilter:kv_budget=32,filter_layer=2",
        "h2o:retain_rate=0.3333333333333333,window=4", "streamingllm:kv_budget=16"}) {
    auto o = parse_method_spec(spec);
    ASSERT_TRUE(o) << spec << ": " << o.error();
    EXPECT_EQ(format_method_spec(*o), spec);
  }
}

TEST(MethodSpec, ClearErrors) {
  auto expect_error = [](const char* spec, const char* needle) {
    auto o = parse_method_spec(spec);
    ASSERT_FALSE(o) << spec;
    EXPECT_NE(o.error().find(needle), std::string::npos) << spec << " -> " << o.error();
  };
  expect_error("nosuch", "unknown KV method 'nosuch'");
  expect_error("", "no method name");
  expect_error("snapkv:tsp_rate=0.2", "tsp_rate does not apply");
  expect_error("fastkv:tsp_rate", "expected key=value");
  expect_error("fastkv:tsp_rate=0.2,", "expected key=value");
  expect_error("fastkv:bogus=1", "unknown method option 'bogus'");
  expect_error("fastkv:tsp_rate=abc", "got 'abc'");
  expect_error("fastkv:window=4294967297", "got '4294967297'");
  expect_error("fastkv:window=8,window=9", "given twice");
  expect_error("snapkv:per_query_head=yes", "true or false");
}

TEST(MethodSpec, OptionsPerMethod) {
  auto fullkv = method_options("fullkv");
  ASSERT_TRUE(fullkv);
  EXPECT_TRUE(fullkv->empty());
  auto fastkv = method_options("fastkv");
  ASSERT_TRUE(fastkv);
  bool has_tsp_rate = false;
  for (const auto& i : *fastkv) has_tsp_rate |= std::string(i.key) == "tsp_rate";
  EXPECT_TRUE(has_tsp_rate);
  EXPECT_FALSE(method_options("nosuch"));
}

TEST(ParseNumber, FullWidthThenRange) {
  auto big = parse_int_in_range("4294967297", "--max-new-tokens", 0, 1 << 30);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().find("got '4294967297'"), std::string::npos) << big.error();
  auto huge = parse_int_in_range("1000000000000000000000", "--n", 0, 10);
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().find("got '1000000000000000000000'"), std::string::npos);
  EXPECT_FALSE(parse_int_in_range(" 5", "--n", 0, 10));
  EXPECT_FALSE(parse_int_in_range("5x", "--n", 0, 10));
  EXPECT_EQ(*parse_int_in_range("-5", "--n", -10, 10), -5);
  auto seed = parse_uint64("18446744073709551615", "--seed");
  ASSERT_TRUE(seed) << seed.error();
  EXPECT_EQ(*seed, 18446744073709551615ull);
  EXPECT_FALSE(parse_uint64("-1", "--seed"));
  EXPECT_FALSE(parse_uint64("18446744073709551616", "--seed"));
  EXPECT_FALSE(parse_double_in_range("nan", "--t", 0, 1));
  EXPECT_FALSE(parse_double_in_range("1e999", "--t", 0, 1e300));
  EXPECT_FALSE(parse_double_in_range("1.5", "--top-p", 0, 1));
  EXPECT_DOUBLE_EQ(*parse_double_in_range("0.25", "--top-p", 0, 1), 0.25);
}

TEST(MethodSpec, KeysAreTheOnesGivenNormalised) {
  auto keys = method_spec_keys(" fastkv : tsp-rate = 0.2 , retain_rate=0.1");
  ASSERT_TRUE(keys) << keys.error();
  EXPECT_EQ(*keys, (std::vector<std::string>{"tsp_rate", "retain_rate"}));
  auto none = method_spec_keys("snapkv");
  ASSERT_TRUE(none) << none.error();
  EXPECT_TRUE(none->empty());
  // A key that ends like another (window vs ...window) is not confused with it.
  auto w = method_spec_keys("snapkv:window=8");
  ASSERT_TRUE(w);
  EXPECT_EQ(*w, (std::vector<std::string>{"window"}));
  EXPECT_FALSE(method_spec_keys("snapkv:bogus=1"));
  EXPECT_FALSE(method_spec_keys("fastkv:tsp_rate"));
}

}  // namespace
}  // namespace fkv

#include "config/agent_spec.hpp"

#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>
#include <utility>

#include "base/sha256.hpp"
#include "config/spec_reader.hpp"

namespace keel::config {

namespace fs = std::filesystem;

const tool_spec* agent_spec::find_tool(const std::string& tool_name) const {
  for (const auto& t : tools)
    if (t.name == tool_name) return &t;
  return nullptr;
}

using namespace spec_detail;

namespace {

// nlohmann keeps the last of two equal keys in an object without a word;
// in a spec that is a copy-paste mistake, so it is reported with the
// pointer of the repeated key.
class duplicate_key_finder {
 public:
  bool on_event(json::parse_event_t event, const json& parsed) {
    using ev = json::parse_event_t;
    switch (event) {
      case ev::object_start:
        frames_.push_back({true, {}, {}, 0});
        break;
      case ev::array_start:
        frames_.push_back({false, {}, {}, 0});
        break;
      case ev::key: {
        frame& top = frames_.back();
        top.key = parsed.get<std::string>();
        if (!top.keys.insert(top.key).second && !found_) found_ = pointer();
        break;
      }
      case ev::object_end:
      case ev::array_end:
        frames_.pop_back();
        element_done();
        break;
      case ev::value:
        element_done();
        break;
    }
    return true;
  }
  const std::optional<std::string>& found() const { return found_; }

 private:
  struct frame {
    bool object;
    std::set<std::string> keys;
    std::string key;
    std::size_t index;
  };
  void element_done() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }
  std::string pointer() const {
    std::string p;
    for (const frame& f : frames_)
      p = f.object ? pointer_child(p, f.key) : pointer_child(p, f.index);
    return p;
  }
  std::vector<frame> frames_;
  std::optional<std::string> found_;
};

}  // namespace

result<std::shared_ptr<const agent_spec>> parse_agent_spec(const json& j, const std::string& source,
                                                           const std::string& base_dir) {
  fields top(source, j, "");
  KEEL_TRY(top.expect_object());
  KEEL_TRY(top.only({"name", "description", "instructions", "model", "tools", "guardrails",
                     "budgets", "idle_ms", "max_steps_per_turn", "follow_latest",
                     "dedupe_window_ms", "retention", "signals"}));
  auto spec = std::make_shared<agent_spec>();
  KEEL_TRY(top.required("name"));
  KEEL_TRY(top.string("name", spec->name));
  if (!is_agent_type_name(spec->name))
    return top.fail_key("name", "must match [a-z0-9][a-z0-9_.-]{0,63}");
  if (spec->name == "counter")
    return top.fail_key("name", "\"counter\" is reserved for the built-in agent type");
  KEEL_TRY(top.string("description", spec->description));
  KEEL_TRY(top.string("instructions", spec->instructions));
  KEEL_TRY(top.required("model"));
  KEEL_TRY(parse_model(top.sub("model"), base_dir, spec->model));
  KEEL_TRY(parse_tools(top, spec->tools));
  if (top.find("guardrails"))
    KEEL_TRY(parse_guardrails(top.sub("guardrails"), spec->tools, spec->guardrails));
  if (top.find("budgets")) KEEL_TRY(parse_budgets(top.sub("budgets"), spec->budgets));
  KEEL_TRY(top.optional_uint("idle_ms", spec->idle_ms, 1));
  KEEL_TRY(top.uint("max_steps_per_turn", spec->max_steps_per_turn, 1));
  KEEL_TRY(top.boolean("follow_latest", spec->follow_latest));
  KEEL_TRY(top.optional_uint("dedupe_window_ms", spec->dedupe_window_ms, 0));
  if (top.find("retention")) {
    fields rf = top.sub("retention");
    KEEL_TRY(rf.expect_object());
    KEEL_TRY(rf.only({"keep_events", "keep_ms"}));
    KEEL_TRY(rf.uint("keep_events", spec->retention.keep_events));
    KEEL_TRY(rf.uint("keep_ms", spec->retention.keep_ms));
    if (spec->retention.keep_events == 0 && spec->retention.keep_ms == 0)
      return rf.fail(rf.pointer(), "needs keep_events or keep_ms (at least one above 0)");
  }
  KEEL_TRY(parse_signals(top, spec->signals));
  spec->source = source;
  // Self-contained: the scripted model's replies inline, so that the stored
  // version needs no file, and a new script is a new version.
  spec->canonical = j;
  if (!spec->model.script_content.is_null())
    spec->canonical["model"]["script"] = spec->model.script_content;
  // dump() is canonical: nlohmann's objects keep keys sorted and the dump
  // has no whitespace, so reformatting a file keeps its hash.
  spec->hash = to_hex(sha256(spec->canonical.dump(-1, ' ', false, json::error_handler_t::replace)));
  return std::shared_ptr<const agent_spec>(std::move(spec));
}

result<std::shared_ptr<const agent_spec>> parse_agent_spec_body(const json& j,
                                                                const std::string& source) {
  if (j.is_object() && j.contains("model") && j["model"].is_object() &&
      j["model"].contains("script") && j["model"]["script"].is_string())
    return error(code::invalid_argument,
                 source +
                     ": /model/script: give the replies inline ({\"replies\": [...]}): a "
                     "spec sent to a node cannot name a file");
  return parse_agent_spec(j, source, "");
}

namespace {

// A spec file's JSON, with a duplicated key refused.
result<json> read_spec_json(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return error(code::io_error, "cannot read agent spec " + path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return error(code::io_error, "cannot read agent spec " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad())
    return error(code::io_error, "cannot read agent spec " + path + ": " + std::strerror(errno));

  duplicate_key_finder dups;
  json j;
  try {
    j = json::parse(text.str(), [&](int, json::parse_event_t e, json& parsed) {
      return dups.on_event(e, parsed);
    });
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, ...".
    std::string what = e.what();
    if (auto close = what.find("] "); close != std::string::npos) what.erase(0, close + 2);
    return error(code::invalid_argument, path + ": not valid JSON: " + what);
  }
  if (dups.found())
    return error(code::invalid_argument, path + ": " + *dups.found() + ": key appears twice");
  return j;
}

result<std::shared_ptr<const agent_spec>> parse_spec_file(const json& j, const std::string& path) {
  fs::path base = fs::path(path).parent_path();
  return parse_agent_spec(j, path, base.empty() ? "." : base.string());
}

// Why a file's JSON declares no type, or "" when it declares one.
std::string not_a_spec(const json& j) {
  if (j.is_object() && j.contains("name")) return {};
  if (j.is_object() && j.contains("replies")) return "a scripted model's script, not a spec";
  return "no \"name\": not an agent-type spec";
}

}  // namespace

result<std::shared_ptr<const agent_spec>> load_agent_spec(const std::string& path) {
  auto j = read_spec_json(path);
  if (!j) return j.error();
  return parse_spec_file(*j, path);
}

result<spec_folder> load_agent_specs(const std::string& dir) {
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    return error(code::io_error, "cannot open agent spec folder " + dir + ": " + ec.message());
  if (!fs::exists(st)) return error(code::io_error, "agent spec folder " + dir + " does not exist");
  if (!fs::is_directory(st))
    return error(code::io_error, "agent spec folder " + dir + " is not a folder");
  std::vector<fs::path> files;
  fs::directory_iterator it(dir, ec), end;
  if (ec)
    return error(code::io_error, "cannot list agent spec folder " + dir + ": " + ec.message());
  for (; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".json") continue;
    std::error_code fec;
    if (fs::is_regular_file(it->path(), fec)) files.push_back(it->path());
  }
  if (ec)
    return error(code::io_error, "cannot list agent spec folder " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });

  spec_folder folder;
  std::map<std::string, std::string> seen;  // type name -> file
  for (const auto& file : files) {
    auto j = read_spec_json(file.string());
    if (!j) return j.error();
    if (std::string why = not_a_spec(*j); !why.empty()) {
      folder.skipped.emplace_back(file.string(), std::move(why));
      continue;
    }
    auto spec = parse_spec_file(*j, file.string());
    if (!spec) return spec.error();
    auto [prev, fresh] = seen.emplace((*spec)->name, file.string());
    if (!fresh)
      return error(code::invalid_argument, "agent type \"" + (*spec)->name +
                                               "\" is declared twice: in " + prev->second +
                                               " and in " + file.string());
    folder.specs.push_back(std::move(*spec));
  }
  return folder;
}

}  // namespace keel::config

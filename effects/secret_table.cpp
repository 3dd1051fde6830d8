#include "effects/secret_table.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/clock.hpp"
#include "config/secret_refs.hpp"

namespace keel::actors {

namespace {

// The values to redact, longest first, so that a value holding another is
// replaced whole; one name per value.
class redactor {
 public:
  void add(const secret_values& values) {
    for (const auto& [name, e] : values) {
      if (e.value.size() < min_redacted_bytes) continue;
      if (std::any_of(marks_.begin(), marks_.end(),
                      [&](const auto& m) { return m.value == e.value; }))
        continue;
      marks_.push_back({e.value, "[secret:" + name + "]"});
      starts_[static_cast<unsigned char>(e.value[0])] = true;
    }
  }
  void finish() {
    std::stable_sort(marks_.begin(), marks_.end(),
                     [](const mark& a, const mark& b) { return a.value.size() > b.value.size(); });
  }
  bool empty() const { return marks_.empty(); }

  // `s` with the values replaced, or nullopt when it holds none. One pass,
  // so a replacement is never searched again.
  std::optional<std::string> replaced(std::string_view s) const {
    std::string out;
    std::size_t copied = 0;
    for (std::size_t i = 0; i < s.size();) {
      const mark* hit = nullptr;
      if (starts_[static_cast<unsigned char>(s[i])])
        for (const auto& m : marks_)
          if (s.compare(i, m.value.size(), m.value) == 0) {
            hit = &m;
            break;
          }
      if (!hit) {
        ++i;
        continue;
      }
      out.append(s.substr(copied, i - copied)).append(hit->replacement);
      i += hit->value.size();
      copied = i;
    }
    if (copied == 0) return std::nullopt;
    out.append(s.substr(copied));
    return out;
  }
  std::string text(std::string_view s) const {
    auto r = replaced(s);
    return r ? std::move(*r) : std::string(s);
  }

  void json_in_place(json& j) const {
    if (j.is_string()) {
      if (auto r = replaced(j.get_ref<const std::string&>())) j = std::move(*r);
    } else if (j.is_array()) {
      for (auto& e : j) json_in_place(e);
    } else if (j.is_object()) {
      bool keys = false;
      for (auto it = j.begin(); it != j.end(); ++it) {
        json_in_place(it.value());
        keys = keys || replaced(it.key()).has_value();
      }
      if (!keys) return;
      json out = json::object();
      for (auto it = j.begin(); it != j.end(); ++it) out[text(it.key())] = std::move(it.value());
      j = std::move(out);
    }
  }

 private:
  struct mark {
    std::string value;
    std::string replacement;
  };
  std::vector<mark> marks_;
  bool starts_[256] = {};
};

// A file secret: the whole content, one trailing newline dropped (what
// `echo value > file` and editors add), so multi-line values survive.
result<std::string> read_secret_file(const std::string& name, const std::string& path,
                                     std::vector<std::string>& notes) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return error(code::invalid_argument,
                 "secret \"" + name + "\": cannot read file " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string value = ss.str();
  if (!value.empty() && value.back() == '\n') {
    value.pop_back();
    if (!value.empty() && value.back() == '\r') value.pop_back();
  }
  if (value.empty())
    return error(code::invalid_argument, "secret \"" + name + "\": file " + path + " is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 044) != 0)
    notes.push_back("warning: secret \"" + name + "\": file " + path +
                    " is readable by its group or others (chmod 600 it)");
  return value;
}

result<std::string> read_secret_env(const std::string& name, const std::string& var) {
  const char* v = std::getenv(var.c_str());
  if (v == nullptr || *v == '\0')
    return error(code::invalid_argument, "secret \"" + name + "\": the environment variable " +
                                             var + " is " + (v ? "empty" : "not set"));
  return std::string(v);
}

// A header value goes on one line of the request: a line break from a
// secret would end the header there and start another.
status check_header_value(const std::string& header, const std::string& value) {
  if (value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos) return status::ok();
  return error(code::invalid_argument,
               "header " + header +
                   ": with its secrets put in, the value holds a line break or NUL, which "
                   "cannot go in an HTTP header");
}

bool any_expansion(const std::map<std::string, std::string>& values) {
  return std::any_of(values.begin(), values.end(),
                     [](const auto& kv) { return config::needs_expansion(kv.second); });
}

}  // namespace

const char* to_string(secret_source s) {
  switch (s) {
    case secret_source::store:
      return "store";
    case secret_source::file:
      return "file";
    case secret_source::env:
      return "env";
  }
  return "store";
}

std::string redact_text(std::string_view text, const secret_values& values) {
  redactor r;
  r.add(values);
  r.finish();
  return r.text(text);
}

// --- secret_scope ------------------------------------------------------------

result<std::string> secret_scope::expand(std::string_view text) const {
  return config::expand_secrets(text, [this](std::string_view name) -> const std::string* {
    if (!values_) return nullptr;
    auto it = values_->find(name);
    return it == values_->end() ? nullptr : &it->second.value;
  });
}

status secret_scope::expand_headers(std::map<std::string, std::string>& headers) const {
  for (auto& [header, value] : headers) {
    if (!config::needs_expansion(value)) continue;
    auto v = expand(value);
    if (!v) return error(v.error().error_code(), "header " + header + ": " + v.error().message());
    KEEL_TRY(check_header_value(header, *v));
    value = std::move(*v);
  }
  return status::ok();
}

result<std::optional<config::tool_spec>> secret_scope::resolve(
    const config::tool_spec& tool) const {
  if (!any_expansion(tool.headers) && !any_expansion(tool.env))
    return std::optional<config::tool_spec>();
  config::tool_spec out = tool;
  KEEL_TRY(expand_headers(out.headers));
  for (auto& [var, value] : out.env) {
    if (!config::needs_expansion(value)) continue;
    auto v = expand(value);
    if (!v) return error(v.error().error_code(), "env " + var + ": " + v.error().message());
    if (v->find('\0') != std::string::npos)
      return error(code::invalid_argument,
                   "env " + var + ": with its secrets put in, the value holds a NUL byte");
    value = std::move(*v);
  }
  return std::optional<config::tool_spec>(std::move(out));
}

result<std::optional<config::model_spec>> secret_scope::resolve(
    const config::model_spec& model) const {
  if (model.api_key.empty() && !any_expansion(model.headers))
    return std::optional<config::model_spec>();
  config::model_spec out = model;
  if (!out.api_key.empty()) {
    auto v = expand(out.api_key);
    if (!v) return error(v.error().error_code(), "api_key: " + v.error().message());
    KEEL_TRY(check_header_value("Authorization (api_key)", *v));
    out.api_key = std::move(*v);
  }
  KEEL_TRY(expand_headers(out.headers));
  return std::optional<config::model_spec>(std::move(out));
}

void secret_scope::redact(effect_outcome& o) const {
  redactor r;
  if (values_) r.add(*values_);
  // A value set or replaced while the call ran may be in what it returned.
  if (now_)
    if (auto current = now_()) r.add(*current);
  r.finish();
  if (r.empty()) return;
  o.error = r.text(o.error);
  r.json_in_place(o.result);
}

// --- secret_table ------------------------------------------------------------

result<std::unique_ptr<secret_table>> secret_table::open(const config::node_config& cfg,
                                                         persistence::store& db,
                                                         std::vector<std::string>& notes) {
  auto values = std::make_shared<secret_values>();
  const int64_t now = wall_ms();
  for (const auto& [name, origin] : cfg.secrets) {
    const bool file = origin.from == config::secret_origin::kind::file;
    auto v =
        file ? read_secret_file(name, origin.where, notes) : read_secret_env(name, origin.where);
    if (!v) return v.error();
    if (v->size() > max_secret_bytes)
      return error(code::invalid_argument, "secret \"" + name + "\" is larger than " +
                                               std::to_string(max_secret_bytes) + " bytes");
    (*values)[name] = {std::move(*v), file ? secret_source::file : secret_source::env, origin.where,
                       now};
  }
  std::string key_file = cfg.secret_key_file;
  if (key_file.empty()) key_file = cfg.data_dir + "/secret.key";
  std::vector<persistence::stored_secret> stored;
  auto store = persistence::secret_store::open(db, key_file, stored);
  if (!store) return store.error();
  for (auto& s : stored) {
    if (values->count(s.name)) {
      notes.push_back("secret \"" + s.name +
                      "\" is set in the node config and in the store; the config's value is "
                      "used");
      continue;
    }
    (*values)[s.name] = {std::move(s.value), secret_source::store, "", s.updated_ms};
  }
  std::unique_ptr<secret_table> t(new secret_table());
  t->values_ = std::move(values);
  t->store_ = std::move(*store);
  return t;
}

std::shared_ptr<const secret_values> secret_table::snapshot() const {
  std::lock_guard lk(mu_);
  return values_;
}

secret_scope secret_table::scope() const {
  return secret_scope(snapshot(), [this] { return snapshot(); });
}

result<bool> secret_table::set(std::string_view name, std::string_view value) {
  KEEL_TRY(config::check_secret_name(name));
  if (value.empty()) return error(code::invalid_argument, "a secret's value must not be empty");
  if (value.size() > max_secret_bytes)
    return error(code::invalid_argument,
                 "a secret's value is at most " + std::to_string(max_secret_bytes) + " bytes");
  std::lock_guard w(write_mu_);
  auto before = snapshot();
  auto it = before->find(name);
  if (it != before->end() && it->second.source != secret_source::store)
    return error(code::conflict,
                 "secret \"" + std::string(name) + "\" comes from the node config (" +
                     to_string(it->second.source) + " " + it->second.from + "); change it there");
  const int64_t now = wall_ms();
  KEEL_TRY(store_->put(name, value, now));
  auto next = std::make_shared<secret_values>(*before);
  (*next)[std::string(name)] = {std::string(value), secret_source::store, "", now};
  std::lock_guard lk(mu_);
  values_ = std::move(next);
  return it == before->end();
}

status secret_table::remove(std::string_view name) {
  KEEL_TRY(config::check_secret_name(name));
  std::lock_guard w(write_mu_);
  auto before = snapshot();
  auto it = before->find(name);
  if (it == before->end())
    return error(code::not_found, "secret \"" + std::string(name) + "\" is not set on this node");
  if (it->second.source != secret_source::store)
    return error(code::conflict,
                 "secret \"" + std::string(name) + "\" comes from the node config (" +
                     to_string(it->second.source) + " " + it->second.from + "); remove it there");
  KEEL_TRY(store_->erase(name));
  auto next = std::make_shared<secret_values>(*before);
  next->erase(std::string(name));
  std::lock_guard lk(mu_);
  values_ = std::move(next);
  return status::ok();
}

std::vector<secret_listing> secret_table::list() const {
  std::vector<secret_listing> out;
  for (const auto& [name, e] : *snapshot()) out.push_back({name, e.source, e.from, e.updated_ms});
  return out;
}

}  // namespace keel::actors

// keel completion bash: a completion script made from the table of
// commands (apps/keel_help.cpp), so it offers exactly the commands,
// subcommands and flags the CLI takes.

#include <string>
#include <string_view>
#include <utility>

#include "apps/keel_cli.hpp"

namespace keel::cli_app {

std::string completion_bash() {
  const auto tops = command_words();
  std::string globals = "--server --token --token-file --ca --cert --key --json --help --version";
  std::string out = R"(# bash completion for keel: source <(keel completion bash)
# Generated from the CLI's table of commands; regenerate after an upgrade.
_keel() {
  local cur prev cmd="" sub="" i w
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    case "$w" in
      --server|--token|--token-file|--ca|--cert|--key) ((i++)); continue ;;
      -*) continue ;;
    esac
    if [[ -z $cmd ]]; then cmd="$w"; elif [[ -z $sub ]]; then sub="$w"; fi
  done
  case "$prev" in
    --token-file|--ca|--cert|--key)
      COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --server|--token) return ;;
  esac
  local words="" flags=""
  case "$cmd" in
    "")
)";
  out += "      if [[ $cur == -* ]]; then words=\"" + globals + "\"; else words=\"";
  for (std::size_t i = 0; i < tops.size(); ++i) out += (i ? " " : "") + tops[i];
  out += "\"; fi ;;\n";
  out += "    help)\n      [[ -z $sub ]] && words=\"";
  for (std::size_t i = 0; i < tops.size(); ++i) out += (i ? " " : "") + tops[i];
  out += "\" ;;\n";
  out += "    completion)\n      [[ -z $sub ]] && words=\"bash\" ;;\n";
  // Flags of an entry, and those that take a file (completed as paths).
  auto flag_words = [](const command_help& c, std::string& files) {
    std::string w;
    for (const auto& f : c.flags) {
      w += (w.empty() ? "--" : " --") + std::string(f.name);
      if (f.short_name) w += std::string(" -") + f.short_name;
      if (f.value && std::string_view(f.value).find("FILE") != std::string_view::npos)
        files += (files.empty() ? "--" : "|--") + std::string(f.name);
    }
    return w;
  };
  for (const auto& top : tops) {
    if (top == "help" || top == "completion") continue;
    const auto subs = command_words(top);
    std::string files, body;
    if (subs.empty()) {
      body = "      flags=\"" + flag_words(*find_command(top), files) + "\" ;;\n";
    } else {
      std::string own, sub_list;
      if (auto* c = find_command(top)) own = flag_words(*c, files);
      body = "      case \"$sub\" in\n";
      for (const auto& sub : subs) {
        sub_list += (sub_list.empty() ? "" : " ") + sub;
        body += "        " + sub + ") flags=\"" +
                flag_words(*find_command(top + " " + sub), files) + "\" ;;\n";
      }
      body += "        *) words=\"" + sub_list + "\"; flags=\"" + own + "\" ;;\n      esac ;;\n";
    }
    out += "    " + top + ")\n";
    if (!files.empty())
      out += "      case \"$prev\" in " + files +
             ") COMPREPLY=($(compgen -f -- \"$cur\")); return ;; esac\n";
    out += body;
  }
  out += R"(  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags --help --json" -- "$cur"))
  elif [[ -n $words ]]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
complete -o default -F _keel keel
)";
  return out;
}

}  // namespace keel::cli_app

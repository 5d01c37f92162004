// fmt's compiled part inside the `sourced` binary, so the tool does not load libfmt.so, which in turn
// loads libstdc++.so: with SOURCED_STATIC_CLI the C++ runtime and SQLite are linked in too, and a process
// starts with libc and libm only (~2 ms less per process here: the dynamic loader's relocations and page
// faults of three libraries). The definitions come from fmt's own header (fmt/format-inl.h, which libfmt
// compiles the same way); the instantiations below are the templates fmt/format.h declares but does not
// define inline. With --as-needed, libfmt.so is then not a dependency of the binary; a symbol missing here
// would bring it back, which Cli.ASqliteCommandLoadsOnlyTheCLibraries catches.

#include <fmt/format-inl.h>

namespace fmt {
inline namespace v9 {
namespace detail {

template auto dragonbox::to_decimal(float x) noexcept -> dragonbox::decimal_fp<float>;
template auto dragonbox::to_decimal(double x) noexcept -> dragonbox::decimal_fp<double>;
template locale_ref::locale_ref(const std::locale& loc);
template auto locale_ref::get<std::locale>() const -> std::locale;
template auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl(locale_ref) -> char;
template void buffer<char>::append(const char*, const char*);
template void vformat_to(buffer<char>&, string_view, basic_format_args<FMT_BUFFER_CONTEXT(char)>, locale_ref);

}  // namespace detail
}  // namespace v9
}  // namespace fmt

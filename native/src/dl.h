// Opening a library at run time (cuBLAS, NCCL): the addon is built against prototypes it declares
// itself, so it compiles where the library is absent and says so clearly when it is needed.
#pragma once
#include <dlfcn.h>

#include <initializer_list>
#include <stdexcept>
#include <string>

namespace cleave {

/** The first of `names` that loads; otherwise throws "`what` is not installed (tried …); `advice`". */
inline void* open_first(std::initializer_list<const char*> names, const char* what, const char* advice) {
  std::string tried;
  for (const char* n : names) {
    if (void* h = dlopen(n, RTLD_NOW | RTLD_LOCAL)) return h;
    tried += std::string(tried.empty() ? "" : ", ") + n;
  }
  throw std::runtime_error(std::string(what) + " is not installed (tried " + tried + "); " + advice);
}

/** Points `fn` at symbol `name` of `lib`, or throws "`what` has no symbol `name``hint`". */
template <typename F>
void bind_symbol(void* lib, F& fn, const char* name, const char* what, const char* hint = "") {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) throw std::runtime_error(std::string(what) + " has no symbol " + name + hint);
}

}  // namespace cleave

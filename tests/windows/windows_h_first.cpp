// A translation unit that includes the whole <windows.h> (no WIN32_LEAN_AND_MEAN, so it also
// brings the old winsock.h) before chatsock.hpp, as an existing Windows program would. It also
// defines min and max as macros, as MSVC's <windows.h> does without NOMINMAX (MinGW's spares
// C++), so this build catches what would break there. test_windows.cpp calls what is below.
#if defined(_WIN32)
#  include <windows.h>
#  ifndef min
#    define min(a, b) (((a) < (b)) ? (a) : (b))
#    define max(a, b) (((a) > (b)) ? (a) : (b))
#  endif

#  include "chatsock.hpp"

#  include <string>

// chatsock.hpp set the macros aside and put them back: this program's own uses still work.
int windows_h_first_max(int a, int b) { return max(a, b); }

#  include "welcome_roundtrip.inc"

std::string windows_h_first_welcome() { return welcome_roundtrip("windows.h"); }
#endif

/* Debian's LLVM libunwind (libunwind-16-dev), the unwinder the static musl build links,
 * was compiled for glibc with _FORTIFY_SOURCE, so it calls glibc's checked fprintf on its
 * error paths. musl has no such symbol; this one forwards to vfprintf. Built with musl-gcc
 * and added to a copy of that libunwind.a by `make static`. */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *f, int flag, const char *fmt, ...)
{
    va_list ap;
    int r;
    (void)flag;
    va_start(ap, fmt);
    r = vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}

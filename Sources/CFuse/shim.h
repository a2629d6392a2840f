// libfuse3's low-level API. The header refuses to compile without
// FUSE_USE_VERSION; 314 makes fuse_session_loop_mt resolve to a real symbol.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

// libpmemobj, linked only into the benchmark as the persistent-allocator peer.
#include <libpmemobj.h>

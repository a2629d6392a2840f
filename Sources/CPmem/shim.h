// libpmem: pmem_map_file, pmem_persist, pmem_msync, pmem_is_pmem.
// Included as is; no macros need wrapping.
#include <libpmem.h>

// libnuma: mbind, get_mempolicy, move_pages and the nodemask helpers.
// numaif.h names the MPOL_* modes as macros; linux/mempolicy.h must not be
// included beside it (it names them as an enum).
#include <numa.h>
#include <numaif.h>

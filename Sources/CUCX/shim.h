// UCX's protocol layer (ucp) and, for listing RDMA devices, libibverbs.
// Swift imports UCX's functions and structs as they are; what it cannot
// import are function-like macros, so each used here has a wrapper of the
// same meaning below.
#include <ucp/api/ucp.h>
#include <infiniband/verbs.h>
#include <stdint.h>

static inline int CUCX_ptr_is_err(const void *p) { return UCS_PTR_IS_ERR(p); }
static inline int CUCX_ptr_is_ptr(const void *p) { return UCS_PTR_IS_PTR(p); }
static inline ucs_status_t CUCX_ptr_status(const void *p) { return UCS_PTR_STATUS(p); }
static inline ucp_datatype_t CUCX_dt_contig(size_t element) { return ucp_dt_make_contig(element); }

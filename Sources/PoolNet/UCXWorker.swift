import CUCX
#if canImport(Glibc)
import Glibc
#endif

/// A UCX context and its one worker: the engine under a memory node and a
/// remote pool. The worker is created single-threaded; its owner drives it
/// from one thread at a time (RemotePool under its lock, MemoryNode from its
/// serving thread).
final class UCXWorker {
    let context: OpaquePointer
    let handle: OpaquePointer
    /// Requests given up at their deadline: still owned by UCX until the
    /// endpoint they ran on is closed, then freed by `reap()`.
    private var abandoned: [UnsafeMutableRawPointer] = []

    /// `serving`: a memory node's worker, which gets an event descriptor to
    /// sleep on when idle, and listens.
    init(serving: Bool) throws(NetError) {
        if serving {
            // A node restarted after a crash listens on its port again at
            // once, though its old connections linger in TIME_WAIT. Read
            // from the environment when UCX starts its transports, below.
            setenv("UCX_TCP_CM_REUSEADDR", "y", 0)
            setenv("UCX_RDMA_CM_REUSEADDR", "y", 0)
        }
        var config: OpaquePointer?
        try UCX.check("ucp_config_read", ucp_config_read(nil, nil, &config))
        defer { ucp_config_release(config) }
        var params = ucp_params_t()
        params.field_mask = UInt64(UCP_PARAM_FIELD_FEATURES.rawValue)
        // Active Messages only: without the RMA and atomic features UCX
        // installs no handler that would let a peer reach this process's
        // memory (over TCP it emulates them and checks no key; NodeCall).
        params.features = UInt64(UCP_FEATURE_AM.rawValue) | (serving ? UInt64(UCP_FEATURE_WAKEUP.rawValue) : 0)
        var context: OpaquePointer?
        try UCX.check("ucp_init", ucp_init(&params, config, &context))
        var workerParams = ucp_worker_params_t()
        workerParams.field_mask = UInt64(UCP_WORKER_PARAM_FIELD_THREAD_MODE.rawValue)
        workerParams.thread_mode = UCS_THREAD_MODE_SINGLE
        var worker: OpaquePointer?
        let status = ucp_worker_create(context, &workerParams, &worker)
        guard status == UCS_OK, let worker, let context else {
            ucp_cleanup(context)
            throw UCX.error("ucp_worker_create", status)
        }
        self.context = context
        self.handle = worker
    }

    deinit {
        ucp_worker_destroy(handle)
        ucp_cleanup(context)
    }

    /// One round of the worker's progress; true when it did something.
    @discardableResult
    func progress() -> Bool { ucp_worker_progress(handle) != 0 }

    /// Drives the worker until `request` completes: UCS_OK or its error, or
    /// UCS_INPROGRESS when `deadline` passed first (the request is then
    /// abandoned: the caller must close the endpoint it ran on).
    func complete(_ request: UnsafeMutableRawPointer?, by deadline: Deadline) -> ucs_status_t {
        guard let request else { return UCS_OK }
        if CUCX_ptr_is_err(request) != 0 { return CUCX_ptr_status(request) }
        var spins = 0
        while true {
            ucp_worker_progress(handle)
            let status = ucp_request_check_status(request)
            if status != UCS_INPROGRESS {
                ucp_request_free(request)
                return status
            }
            spins &+= 1
            if spins & 63 == 0, deadline.hasPassed {
                abandoned.append(request)
                return UCS_INPROGRESS
            }
        }
    }

    /// Frees abandoned requests that UCX has finished with (after a close
    /// purged them); keeps the rest for a later call.
    func reap() {
        abandoned.removeAll { request in
            guard ucp_request_check_status(request) != UCS_INPROGRESS else { return false }
            ucp_request_free(request)
            return true
        }
    }

    // MARK: Sleeping when idle (memory node)

    /// The descriptor that becomes readable when the worker has events.
    func eventDescriptor() throws(NetError) -> Int32 {
        var fd: Int32 = -1
        try UCX.check("ucp_worker_get_efd", ucp_worker_get_efd(handle, &fd))
        return fd
    }

    /// Arms the event descriptor; false when events are already waiting
    /// (progress again before sleeping).
    func arm() -> Bool { ucp_worker_arm(handle) == UCS_OK }

    // MARK: What UCX found

    /// The transports and devices this context may use ("tcp/lo", "cma/memory"…).
    func transports() -> [String] {
        var text: UnsafeMutablePointer<CChar>?
        var size = 0
        guard let stream = open_memstream(&text, &size) else { return [] }
        ucp_context_print_info(context, stream)
        fclose(stream)
        defer { free(text) }
        guard let text else { return [] }
        // Lines of the form "#      resource 1  :  md 1  dev 1  flags -- tcp/lo".
        return String(cString: text).split(separator: "\n").compactMap { line in
            guard line.contains("resource"), let name = line.split(separator: " ").last, name.contains("/") else { return nil }
            return String(name)
        }
    }
}

/// UCX's status codes in words.
enum UCX {
    static func check(_ call: String, _ status: ucs_status_t) throws(NetError) {
        if status != UCS_OK { throw error(call, status) }
    }

    static func error(_ call: String, _ status: ucs_status_t) -> NetError {
        .transport(call: call, status: describe(status))
    }

    static func describe(_ status: ucs_status_t) -> String {
        String(cString: ucs_status_string(status))
    }

    /// The RDMA devices libibverbs sees (none in a VM without RDMA).
    static func rdmaDevices() -> [String] {
        var count: Int32 = 0
        guard let list = ibv_get_device_list(&count) else { return [] }
        defer { ibv_free_device_list(list) }
        return (0..<Int(count)).compactMap { index in
            list[index].flatMap { ibv_get_device_name($0) }.map { String(cString: $0) }
        }
    }
}

import Atomics
import CDirect
import DirectFormat
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The Swift side of libpoolfs-direct.so (the C side is
/// Sources/DirectInterposer): leasing an open file's layout from the
/// mount and copying it out of the pool's area as it changes. Called with
/// the C side's guard set, so the files it opens here go straight to libc,
/// and never in a signal handler (the C side leaves those calls to the
/// mount), so it may allocate.
enum DirectFiles {
    /// Pools by directory; a new mount of one replaces it.
    static let pools = Mutex<[String: MappedPool]>([:])

    static func attach(_ fd: Int32, flags: Int32) -> UnsafeMutablePointer<pd_file>? {
        // The C side reports writes with its own copy of the request.
        guard pd_wrote_request() == UInt(DirectRequest.wrote) else { return nil }
        var reply = [UInt8](repeating: 0, count: DirectRequest.leaseBytes)
        let answered = reply.withUnsafeMutableBytes {
            pd_real_ioctl(fd, UInt(DirectRequest.lease), $0.baseAddress) == 0
        }
        guard answered else { return nil }
        let words = (0..<5).map { index in
            reply.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)) }
        }
        guard words[0] == DirectRequest.leaseMagic, words[4] <= UInt64(reply.count - DirectRequest.pathOffset),
              words[1] < UInt64(DirectAreaFormat.layoutCapacity) else { return nil }
        let directory = String(decoding: reply[DirectRequest.pathOffset..<(DirectRequest.pathOffset + Int(words[4]))],
                               as: UTF8.self)
        guard let pool = mappedPool(directory, identity: words[3]), let file = pd_file_new() else { return nil }
        let slot = Int(words[1])
        file.pointee.generation = pool.layoutWord(slot, DirectAreaFormat.Layout.generation)
        file.pointee.size = pool.layoutWord(slot, DirectAreaFormat.Layout.size)
        file.pointee.flags = pool.layoutWord(slot, DirectAreaFormat.Layout.flags)
        file.pointee.area = pool.state
        file.pointee.slot = UInt64(slot)
        file.pointee.inode = words[2]
        file.pointee.pool = Unmanaged.passUnretained(pool).toOpaque()
        let access = flags & O_ACCMODE
        file.pointee.readable = access != O_WRONLY ? 1 : 0
        file.pointee.writable = access != O_RDONLY && flags & O_APPEND == 0 ? 1 : 0
        guard refresh(file) == 0 else {
            // Its first layout could not be read: the mount serves it.
            pd_file_release(file)
            return nil
        }
        return file
    }

    private static func mappedPool(_ directory: String, identity: UInt64) -> MappedPool? {
        pools.withLock { pools in
            if let pool = pools[directory], pool.identity == identity { return pool }
            guard let pool = MappedPool(directory: directory, identity: identity) else { return nil }
            // The one it replaces stays mapped: files of the old mount may
            // still point at it, and find it retired.
            pools[directory] = pool
            return pool
        }
    }

    /// Copies the file's layout out of the area at one even generation.
    /// Non-zero where the slot no longer holds this file (its mount went,
    /// or the lease ended) or a run cannot be mapped: the mount serves it.
    static func refresh(_ file: UnsafeMutablePointer<pd_file>) -> Int32 {
        let pool = Unmanaged<MappedPool>.fromOpaque(file.pointee.pool).takeUnretainedValue()
        let slot = Int(file.pointee.slot)
        typealias L = DirectAreaFormat.Layout
        typealias R = DirectAreaFormat.Run
        for attempt in 0..<10_000 {
            if pool.isRetired { return 1 }
            let generation = pool.layoutAtomic(slot, L.generation).load(ordering: .acquiring)
            if generation & 1 == 1 {
                if attempt > 100 { sched_yield() }
                continue
            }
            guard pool.layoutAtomic(slot, L.inode).load(ordering: .relaxed) == file.pointee.inode else { return 1 }
            let count = min(pool.layoutAtomic(slot, L.runCount).load(ordering: .relaxed), UInt64(DirectAreaFormat.maximumRuns))
            var runs: [(start: UInt64, length: UInt64, address: UInt64, flags: UInt64)] = []
            runs.reserveCapacity(Int(count))
            for index in 0..<Int(count) {
                let word = { (field: Int) in pool.layoutAtomic(slot, L.runs + index * R.words + field).load(ordering: .relaxed) }
                runs.append((word(R.start), word(R.length), word(R.address), word(R.flags)))
            }
            guard pool.layoutAtomic(slot, L.generation).load(ordering: .acquiring) == generation else { continue }
            guard let layout = pd_layout_new(generation, UInt64(runs.count)) else { return 1 }
            var kept: UInt64 = 0
            var end: UInt64 = 0
            for run in runs where run.start >= end && run.length > 0 {
                let shelf = Int(run.address >> 48), offset = run.address & (1 << 48 - 1)
                // A run this process cannot map is left out: the mount serves it.
                guard let (base, writable, descriptor) = pool.bytes(shelf: shelf, offset: offset, length: run.length) else {
                    continue
                }
                pd_layout_set(layout, kept, run.start, run.start + run.length, base,
                              writable && run.flags & R.writable != 0 ? 1 : 0, descriptor, offset)
                kept += 1
                end = run.start + run.length
            }
            layout.pointee.count = kept
            pd_file_publish(file, layout)
            return 0
        }
        return 1
    }

    /// A forked child counts its copies in slots of its own.
    static func forked() {
        // A lock another thread held at the fork stays held in the child:
        // then the child counts in its parent's slots (the mount skips a
        // slot whose process is gone).
        _ = pools.withLockIfAvailable { pools in
            for pool in pools.values where !pool.claimClient() { pool.state.pointee.client = nil }
        }
    }
}

@_cdecl("pd_swift_attach")
public func pd_swift_attach(_ fd: Int32, _ flags: Int32) -> UnsafeMutablePointer<pd_file>? {
    DirectFiles.attach(fd, flags: flags)
}

@_cdecl("pd_swift_refresh")
public func pd_swift_refresh(_ file: UnsafeMutablePointer<pd_file>?) -> Int32 {
    guard let file else { return 1 }
    return DirectFiles.refresh(file)
}

@_cdecl("pd_swift_forked")
public func pd_swift_forked() {
    DirectFiles.forked()
}

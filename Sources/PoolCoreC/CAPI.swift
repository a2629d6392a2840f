// libpoolcore.so: the C API of include/poolcore.h, over PoolCore.
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Opaque handles: retained Swift objects behind the C pointer types.
private func handle(_ object: AnyObject) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(object).toOpaque()) }
private func pool(_ pointer: OpaquePointer?) -> Pool? {
    pointer.map { Unmanaged<Pool>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}
private func heap(_ pointer: OpaquePointer?) -> Heap? {
    pointer.map { Unmanaged<Heap>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

/// Runs `body`, turning a thrown error into an errno-style code and this
/// thread's last-error message.
private func code(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return 0
    } catch {
        return LastError.record(error)
    }
}

private func pointerResult(_ body: () throws -> UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    do {
        return try body()
    } catch {
        errno = LastError.record(error)
        return nil
    }
}

private func text(_ pointer: UnsafePointer<CChar>?) -> String? { pointer.map { String(cString: $0) } }

@_cdecl("pool_create")
public func pool_create(_ name: UnsafePointer<CChar>?, _ dir: UnsafePointer<CChar>?, _ size: UInt64,
                        _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    code {
        let created = try Pool.create(name: text(name) ?? "", size: size, at: text(dir))
        out?.pointee = handle(created)
    }
}

@_cdecl("pool_open")
public func pool_open(_ name: UnsafePointer<CChar>?, _ dir: UnsafePointer<CChar>?,
                      _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    code {
        let opened = try Pool.open(name: text(name) ?? "", at: text(dir))
        out?.pointee = handle(opened)
    }
}

@_cdecl("pool_close")
public func pool_close(_ pointer: OpaquePointer?) {
    guard let pointer else { return }
    let unmanaged = Unmanaged<Pool>.fromOpaque(UnsafeRawPointer(pointer))
    unmanaged.takeUnretainedValue().close()
    unmanaged.release()
}

@_cdecl("heap_open")
public func heap_open(_ poolPointer: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ create: Int32,
                      _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    code {
        guard let pool = pool(poolPointer) else { throw PoolError.closed(name: "(null)") }
        out?.pointee = handle(try pool.openHeap(name: text(name) ?? "", create: create != 0))
    }
}

@_cdecl("heap_close")
public func heap_close(_ pointer: OpaquePointer?) {
    guard let pointer else { return }
    Unmanaged<Heap>.fromOpaque(UnsafeRawPointer(pointer)).release()
}

@_cdecl("heap_pool")
public func heap_pool(_ pointer: OpaquePointer?) -> OpaquePointer? {
    heap(pointer).map { OpaquePointer(Unmanaged.passUnretained($0.pool).toOpaque()) }
}

// MARK: Objects

@inline(__always)
private func malloc(_ heap: Heap, _ size: Int) throws -> UnsafeMutableRawPointer? {
    let address = try heap.allocate(size: size)
    return heap.pool.unsafePointer(to: address)
}

private func address(_ heap: Heap, _ pointer: UnsafeRawPointer) throws -> GlobalAddress {
    guard let address = heap.pool.address(of: pointer) else {
        throw PoolError.invalidAddress(.null, reason: "\(pointer) is not in pool '\(heap.pool.name)'")
    }
    return address
}

@_cdecl("heap_malloc")
public func heap_malloc(_ pointer: OpaquePointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    pointerResult {
        guard let heap = heap(pointer) else { throw PoolError.closed(name: "(null)") }
        return try malloc(heap, size)
    }
}

@_cdecl("heap_calloc")
public func heap_calloc(_ pointer: OpaquePointer?, _ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    pointerResult {
        guard let heap = heap(pointer) else { throw PoolError.closed(name: "(null)") }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else { throw PoolError.invalidSize("\(count) × \(size)", reason: "too large") }
        return heap.pool.unsafePointer(to: try heap.allocateZeroed(size: bytes))
    }
}

@_cdecl("heap_realloc")
public func heap_realloc(_ pointer: OpaquePointer?, _ object: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    pointerResult {
        guard let heap = heap(pointer) else { throw PoolError.closed(name: "(null)") }
        guard let object else { return try malloc(heap, size) }
        let moved = try heap.reallocate(try address(heap, object), size: size)
        return heap.pool.unsafePointer(to: moved)
    }
}

@_cdecl("heap_free")
public func heap_free(_ pointer: OpaquePointer?, _ object: UnsafeMutableRawPointer?) {
    guard let object, let heap = heap(pointer) else { return }
    _ = code { try heap.free(try address(heap, object)) }
}

@_cdecl("heap_usable_size")
public func heap_usable_size(_ pointer: OpaquePointer?, _ object: UnsafeRawPointer?) -> Int {
    guard let object, let heap = heap(pointer) else { return 0 }
    return (try? heap.usableSize(try address(heap, object))) ?? 0
}

@_cdecl("heap_posix_memalign")
public func heap_posix_memalign(_ pointer: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                _ alignment: Int, _ size: Int) -> Int32 {
    code {
        guard let heap = heap(pointer), let out else { throw PoolError.closed(name: "(null)") }
        guard alignment >= MemoryLayout<UnsafeRawPointer>.size, alignment & (alignment - 1) == 0 else {
            throw PoolError.invalidSize("\(alignment)", reason: "an alignment is a power of two, at least \(MemoryLayout<UnsafeRawPointer>.size)")
        }
        // Offsets are aligned; pointers too up to the mapping's own alignment.
        guard alignment <= Int(getpagesize()) else {
            throw PoolError.invalidSize("\(alignment)", reason: "alignments above \(getpagesize()) bytes are not supported")
        }
        out.pointee = heap.pool.unsafePointer(to: try heap.allocate(size: size, alignment: alignment))
    }
}

// MARK: Epochs

@_cdecl("heap_epoch_enter")
public func heap_epoch_enter(_ pointer: OpaquePointer?) -> Int32 {
    code {
        guard let heap = heap(pointer) else { throw PoolError.closed(name: "(null)") }
        try heap.enterEpoch()
    }
}

@_cdecl("heap_epoch_exit")
public func heap_epoch_exit(_ pointer: OpaquePointer?) {
    heap(pointer)?.exitEpoch()
}

@_cdecl("heap_delayed_free")
public func heap_delayed_free(_ pointer: OpaquePointer?, _ object: UnsafeMutableRawPointer?) -> Int32 {
    code {
        guard let heap = heap(pointer), let object else { throw PoolError.closed(name: "(null)") }
        try heap.delayedFree(try address(heap, object))
    }
}

// MARK: Addresses

@_cdecl("pool_addr")
public func pool_addr(_ pointer: OpaquePointer?, _ object: UnsafeRawPointer?) -> UInt64 {
    guard let object, let pool = pool(pointer) else { return 0 }
    return pool.address(of: object)?.rawValue ?? 0
}

@_cdecl("pool_ptr")
public func pool_ptr(_ pointer: OpaquePointer?, _ address: UInt64) -> UnsafeMutableRawPointer? {
    guard address != 0, let pool = pool(pointer) else { return nil }
    return pool.unsafePointer(to: GlobalAddress(rawValue: address))
}

// MARK: Errors

@_cdecl("pool_strerror")
public func pool_strerror(_ code: Int32) -> UnsafePointer<CChar>? {
    UnsafePointer(strerror(code))
}

@_cdecl("pool_last_error")
public func pool_last_error() -> UnsafePointer<CChar>? {
    LastError.message
}

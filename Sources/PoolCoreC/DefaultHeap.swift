// The hmalloc-style pm_* calls: one default heap per process, named by the
// environment (POOLFS_POOL, POOLFS_PATH, POOLFS_HEAP), opened on first use.
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

enum DefaultHeap {
    nonisolated(unsafe) private static var opened: Heap?
    nonisolated(unsafe) private static var failure: Int32 = 0
    nonisolated(unsafe) private static var once = pthread_once_t()

    static func get() -> Heap? {
        pthread_once(&once) {
            let environment = { (name: String) in getenv(name).map { String(cString: $0) } }
            do {
                let pool = try Pool.open(name: environment("POOLFS_POOL") ?? "default", at: environment("POOLFS_PATH"))
                let heap = try pool.openHeap(name: environment("POOLFS_HEAP") ?? "default", create: true)
                // `poolfs exec --policy`: this process's allocations only.
                if let text = environment("POOLFS_POLICY"), !text.isEmpty {
                    heap.setPlacementForThisProcess(try Placement(parsing: text))
                }
                DefaultHeap.opened = heap
            } catch {
                DefaultHeap.failure = LastError.record(error)
            }
        }
        if opened == nil { errno = failure }
        return opened
    }
}

@_cdecl("pm_default_heap")
public func pm_default_heap() -> OpaquePointer? {
    DefaultHeap.get().map { OpaquePointer(Unmanaged.passUnretained($0).toOpaque()) }
}

@_cdecl("pm_malloc")
public func pm_malloc(_ size: Int) -> UnsafeMutableRawPointer? {
    heap_malloc(pm_default_heap(), size)
}

@_cdecl("pm_calloc")
public func pm_calloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    heap_calloc(pm_default_heap(), count, size)
}

@_cdecl("pm_realloc")
public func pm_realloc(_ object: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    heap_realloc(pm_default_heap(), object, size)
}

@_cdecl("pm_free")
public func pm_free(_ object: UnsafeMutableRawPointer?) {
    heap_free(pm_default_heap(), object)
}

@_cdecl("pm_usable_size")
public func pm_usable_size(_ object: UnsafeRawPointer?) -> Int {
    heap_usable_size(pm_default_heap(), object)
}

@_cdecl("pm_posix_memalign")
public func pm_posix_memalign(_ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ alignment: Int, _ size: Int) -> Int32 {
    guard let heap = pm_default_heap() else { return errno }
    return heap_posix_memalign(heap, out, alignment, size)
}

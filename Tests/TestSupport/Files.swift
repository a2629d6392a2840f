import Foundation
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

// Files, driven with system calls: the mount tests' vocabulary.

/// The whole file at `path`, or nil with errno set.
public func contents(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = read(fd, &chunk, chunk.count)
        guard n >= 0 else { return nil }
        if n == 0 { return bytes }
        bytes += chunk[0..<n]
    }
}

/// Writes `bytes` to `path` with `flags`; whether every byte went.
@discardableResult
public func store(_ bytes: [UInt8], _ path: String, flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC) -> Bool {
    let fd = open(path, flags, 0o644)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return bytes.isEmpty || write(fd, bytes, bytes.count) == bytes.count
}

public func status(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

/// Free bytes of the file system at `path`; -1 when statvfs fails (an
/// expectation then fails, rather than the test process trapping).
public func freeBytes(_ path: String) -> Int {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return -1 }
    return Int(st.f_bfree) * Int(st.f_frsize)
}

public func pattern(_ count: Int, seed: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ seed &+ $0 >> 9) }
}

/// The bytes PoolTestHelper's file-writer puts in file `index`.
public func writerBytes(_ index: Int) -> [UInt8] {
    let size = (index * 7919) % 600_000 + 1
    return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7 &+ $0 >> 12) }
}

// glibc functions that the Glibc module does not declare, found by name.
public func libc<F>(_ name: String, as type: F.Type) -> F {
    unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), name), to: type)
}

public func renameat2(_ fromDirectory: Int32, _ from: String, _ toDirectory: Int32, _ to: String, _ flags: UInt32) -> Int32 {
    libc("renameat2", as: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)(
        fromDirectory, from, toDirectory, to, flags)
}

public func setxattr(_ path: String, _ name: String, _ value: UnsafeRawPointer, _ size: Int, _ flags: Int32) -> Int32 {
    libc("setxattr", as: (@convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32).self)(
        path, name, value, size, flags)
}

public func getxattr(_ path: String, _ name: String, _ value: UnsafeMutableRawPointer, _ size: Int) -> Int {
    libc("getxattr", as: (@convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer, Int) -> Int).self)(
        path, name, value, size)
}

public func listxattr(_ path: String, _ list: UnsafeMutableRawPointer, _ size: Int) -> Int {
    libc("listxattr", as: (@convention(c) (UnsafePointer<CChar>, UnsafeMutableRawPointer, Int) -> Int).self)(path, list, size)
}

public func removexattr(_ path: String, _ name: String) -> Int32 {
    libc("removexattr", as: (@convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>) -> Int32).self)(path, name)
}

public func currentUmask() -> mode_t {
    let mask = umask(0)
    umask(mask)
    return mask
}

public func xattr(_ path: String, _ name: String) -> String? {
    var value = [UInt8](repeating: 0, count: 4096)
    let n = getxattr(path, name, &value, value.count)
    return n < 0 ? nil : String(decoding: value[0..<n], as: UTF8.self)
}

public func xattrNames(_ path: String) -> [String] {
    var list = [UInt8](repeating: 0, count: 4096)
    let n = listxattr(path, &list, list.count)
    guard n > 0 else { return [] }
    return list[0..<n].split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
}

extension Pool {
    public var usedPages: Int { Int(info().usedBytes) / pageSize }
    public var freePageCount: Int { Int(info().freeBytes) / pageSize }
}

/// The repository's top directory.
public let repositoryRoot: String = {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    return path
}()

/// The names in directory `path` (none if it cannot be read).
public func directoryNames(_ path: String) -> [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
}

/// Free bytes for unprivileged users of the file system at `path`.
public func availableBytes(_ path: String) -> UInt64 {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else { return 0 }
    return UInt64(info.f_bavail) * UInt64(info.f_frsize)
}

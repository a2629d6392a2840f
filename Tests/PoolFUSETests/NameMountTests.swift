import Testing
import TestSupport
@testable import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

// Names are bytes on the mount: kept, compared and listed exactly as given.

/// `directory/name` as a C path of raw bytes.
func bytePath(_ directory: String, _ name: [UInt8]) -> [CChar] {
    (Array(directory.utf8) + [UInt8(ascii: "/")] + name + [0]).map { CChar(bitPattern: $0) }
}

/// The names in `directory` as the kernel lists them, "." and ".." left out.
func listedNames(_ directory: String) -> [[UInt8]] {
    guard let stream = opendir(directory) else { return [] }
    defer { closedir(stream) }
    var names: [[UInt8]] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name != Array(".".utf8) && name != Array("..".utf8) { names.append(name) }
    }
    return names
}

@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct NameMountTests {
    /// Every byte value but NUL and `/`, 255 bytes in all.
    static let everyByte: [UInt8] = Array(1...255).filter { $0 != UInt8(ascii: "/") } + [0x80]

    @Test func namesAreBytesThroughCreateListRenameAndReplay() throws {
        let mounted = try MountedPool()
        let root = mounted.mountpoint
        let long = NameMountTests.everyByte
        #expect(long.count == 255)
        // Two names that are not UTF-8 and differ in one byte are two files.
        for (index, name) in [[UInt8(0x80)], [UInt8(0x81)], long].enumerated() {
            let fd = open(bytePath(root, name), O_WRONLY | O_CREAT | O_EXCL, 0o644)
            #expect(fd >= 0, "create \(name.prefix(4)): errno \(errno)")
            #expect(write(fd, [UInt8(index + 1)], 1) == 1)
            close(fd)
        }
        // Precomposed and decomposed "é" are two names, as on every Linux file system.
        let composed: [UInt8] = [0xc3, 0xa9], decomposed: [UInt8] = [0x65, 0xcc, 0x81]
        #expect(store([4], root + "/" + String(decoding: composed, as: UTF8.self)))
        #expect(open(bytePath(root, decomposed), O_WRONLY | O_CREAT | O_EXCL, 0o644).closing() >= 0)

        func check(_ moment: String) {
            let listed = Set(listedNames(root))
            for name in [[0x81], [0x90], long, composed, decomposed] { #expect(listed.contains(name), "\(moment): \(name.prefix(4))") }
            #expect(!listed.contains([0x80]), "\(moment)")
            #expect(pathContents(bytePath(root, [0x81])) == [2] && pathContents(bytePath(root, [0x90])) == [1], "\(moment)")
            #expect(pathContents(bytePath(root, long)) == [3], "\(moment)")
            #expect(pathContents(bytePath(root, composed)) == [4] && pathContents(bytePath(root, decomposed)) == [], "\(moment)")
        }
        // A rename to another byte name (and the old one gone).
        #expect(rename(bytePath(root, [0x80]), bytePath(root, [0x90])) == 0)
        check("live")
        mounted.killDaemon()
        try mounted.remount()
        check("after a kill, replayed from the log")
        try mounted.remount()
        check("after an unmount, from the rewritten log")
    }

    @Test func everyCallOnANameOver255BytesSaysENAMETOOLONG() throws {
        let mounted = try MountedPool()
        let root = mounted.mountpoint
        let name = bytePath(root, Array(repeating: UInt8(ascii: "n"), count: 256))
        #expect(store([1], root + "/f"))
        #expect(mkdir(root + "/d", 0o755) == 0)
        func refused(_ call: String, _ result: Int32) {
            #expect(result == -1 && errno == ENAMETOOLONG, "\(call): \(result), errno \(errno)")
        }
        var st = stat()
        refused("stat", lstat(name, &st))
        refused("open", open(name, O_RDONLY))
        refused("create", open(name, O_WRONLY | O_CREAT, 0o644))
        refused("mkdir", mkdir(name, 0o755))
        refused("unlink", unlink(name))
        refused("rmdir", rmdir(name))
        refused("rename from", rename(name, root + "/g"))
        refused("rename to", rename(root + "/f", name))
        refused("link", link(root + "/f", name))
        refused("symlink", symlink("f", name))
        refused("chmod", chmod(name, 0o600))
        refused("chown", chown(name, 1, 1))
        refused("truncate", truncate(name, 0))
        // Under .pool/ too.
        refused("stat under .pool", lstat(bytePath(root + "/.pool/heaps", Array(repeating: 0x61, count: 256)), &st))
        // 255 bytes is a name like any other.
        let longest = bytePath(root, Array(repeating: UInt8(ascii: "n"), count: 255))
        #expect(open(longest, O_WRONLY | O_CREAT, 0o644).closing() >= 0 && lstat(longest, &st) == 0)
    }
}

/// The bytes of the file at a raw C path (a String would mend bytes that
/// are not UTF-8), or nil.
func pathContents(_ path: [CChar]) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let n = read(fd, &bytes, bytes.count)
    return n >= 0 ? Array(bytes[0..<n]) : nil
}

extension Int32 {
    /// A descriptor closed at once; the call's result as it was.
    func closing() -> Int32 {
        if self >= 0 { close(self) }
        return self
    }
}

@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct SetIDMountTests {
    /// A write by anyone but root drops set-user-ID, and set-group-ID where
    /// group execute is set or the writer is not of the file's group, over
    /// the rings and over /dev/fuse alone.
    @Test(arguments: [["-o", "allow_other"], ["-o", "allow_other,no_io_uring"]])
    func aWriteByAnotherUserDropsSetIDBits(options: [String]) throws {
        let mounted = try MountedPool(options: options)
        // mkdtemp's 0700 would keep the other user from the mount point.
        #expect(chmod(mounted.scratch.path, 0o755) == 0)
        func writeAs(_ uid: Int, _ file: String) -> Int32 {
            let ids = uid == 0 ? [] : ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups"]
            return (try? run("setpriv", ids + ["dd", "of=" + mounted.path(file), "if=/dev/zero", "bs=1", "count=1",
                                               "conv=notrunc", "status=none"]).status) ?? -1
        }
        func mode(_ file: String) -> UInt32 { (status(mounted.path(file))?.st_mode ?? 0) & 0o7777 }
        let cases: [(file: String, owner: UInt32, mode: UInt32, writer: Int, after: UInt32)] = [
            ("suid", 0, 0o4777, 65534, 0o777),          // another user's write
            ("both", 0, 0o6777, 65534, 0o777),
            ("own", 65534, 0o6777, 65534, 0o777),       // the owner's own write, as on tmpfs
            ("byroot", 65534, 0o6777, 0, 0o6777),       // CAP_FSETID keeps them
            ("locking", 65534, 0o2666, 65534, 0o2666),  // mandatory-locking sgid, writer of its group
            ("locking2", 0, 0o2666, 65534, 0o666),      // … and of another group
        ]
        for c in cases {
            #expect(store([], mounted.path(c.file)))
            #expect(chown(mounted.path(c.file), c.owner, c.owner) == 0 && chmod(mounted.path(c.file), c.mode) == 0)
            #expect(writeAs(c.writer, c.file) == 0, "\(c.file)")
            #expect(mode(c.file) == c.after, "\(c.file): \(String(mode(c.file), radix: 8))")
            #expect(status(mounted.path(c.file))?.st_size == 1, "\(c.file)")
        }
        // Kept in the log too.
        try mounted.remount()
        for c in cases { #expect(mode(c.file) == c.after, "\(c.file) after a remount") }
    }
}

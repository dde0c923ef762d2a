-- chatsock.lua: a Wireshark dissector for chatsock's framed protocol (docs/PROTOCOL.md).
--
--   wireshark -X lua_script:tools/chatsock.lua -o chatsock.port:5000 chat.pcapng
--   tshark -r chat.pcapng -X lua_script:tools/chatsock.lua -o chatsock.port:5000 -V
--   tshark ... -Y 'chatsock.notice'    -Y 'chatsock.sender == "bob"'    -Y '_ws.expert'
--
-- A frame is a 10-byte header (the payload's length in ASCII decimal, padded with spaces) and
-- then the payload, UTF-8 text. From the client, the first frame is the username and every
-- later one a message. From the server, frames come in pairs: the sender's name, then the
-- text; a pair from the reserved name ("server") is a notice.
--
-- The same port also serves text lines (nc, telnet) and WebSocket. Those are not framed, so
-- their first bytes show up here as a bad header, with a hint.

local chatsock = Proto("chatsock", "chatsock chat protocol")

local f = {
    length    = ProtoField.uint32("chatsock.length", "Payload length", base.DEC),
    payload   = ProtoField.string("chatsock.payload", "Payload", base.UNICODE),
    direction = ProtoField.string("chatsock.direction", "Direction"),
    kind      = ProtoField.string("chatsock.kind", "Frame kind"),
    username  = ProtoField.string("chatsock.username", "Username", base.UNICODE),
    sender    = ProtoField.string("chatsock.sender", "Sender", base.UNICODE),
    text      = ProtoField.string("chatsock.text", "Text", base.UNICODE),
    notice    = ProtoField.bool("chatsock.notice", "Server notice"),
}
chatsock.fields = { f.length, f.payload, f.direction, f.kind, f.username, f.sender, f.text,
                    f.notice }

-- Errors go to expert info (Analyze > Expert Information, or -Y _ws.expert), never to a Lua
-- error: a capture of a broken client is exactly what someone opens Wireshark to look at.
local e_bad_header = ProtoExpert.new("chatsock.bad_header", "Bad frame header",
                                     expert.group.MALFORMED, expert.severity.ERROR)
local e_too_long = ProtoExpert.new("chatsock.too_long", "Frame over the payload limit",
                                   expert.group.MALFORMED, expert.severity.ERROR)
chatsock.experts = { e_bad_header, e_too_long }

chatsock.prefs.port = Pref.uint("TCP port", 1234, "The chatsock server's TCP port")
chatsock.prefs.server_name = Pref.string("Reserved sender name", "server",
                                         "The sender name of server notices (server_name)")
chatsock.prefs.max_payload = Pref.uint("Maximum payload", 65536,
                                       "Longer frames are a protocol error (max_payload)")

-- What a frame is (username, message, sender or text) depends on the frames before it in its
-- direction of its TCP stream. Wireshark sees the packets in order only once: on the first
-- pass (tshark, or the GUI loading a file). Later it dissects packets again in any order (a
-- click in the GUI, tshark -2's second pass), so the first pass writes down what each frame
-- is, and later passes only read that back:
--   streams["127.0.0.1:1234>127.0.0.1:40000"] = { count = frames so far, sender = the sender
--       of the pair in progress, broken = the number of the packet with a bad header }
--   frames["<packet number>:<tvb offset>:<frame offset>"] = { kind = ..., sender = ... }
-- A direction is named by addresses and ports, not by the tcp.stream field: field extractors
-- get nothing on tshark -2's first pass, which builds no tree. (So a capture in which a client
-- port is reused for a second connection runs the two together.) A frame's key needs the
-- tvb's offset: when a frame reassembled from earlier segments ends in a packet that holds
-- more frames, TCP calls us twice for that packet (the reassembled bytes, then the rest).
local streams, frames
local function forget_all() streams, frames = {}, {} end  -- a new capture file, or a reload
chatsock.init = forget_all
forget_all()

-- Bytes as printable ASCII, for headers that may hold anything; `keep_utf8` leaves bytes
-- 0x80-0xff alone, for payloads shown in the Info column.
local function escape(s, keep_utf8)
    local pattern = keep_utf8 and "%c" or "[^\32-\126]"
    return (s:gsub(pattern, function(c) return string.format("\\x%02x", c:byte()) end))
end

-- The header rule from PROTOCOL.md: spaces, one or more digits, spaces; exactly 10 bytes.
-- Lua's tonumber() alone would also take "+5", "0x10" or "1e3", which the server refuses.
local function header_length(header)
    if not header:match("^ *%d+ *$") then return nil end
    return tonumber(header:match("%d+"))
end

-- Which frame of its stream this one is, decided the first time it is seen.
local function classify(key, state, to_client, payload)
    local known = frames[key]
    if known then return known end
    local n = state.count
    state.count = n + 1
    local info
    if not to_client then
        info = { kind = (n == 0) and "username" or "message" }
    elseif n % 2 == 0 then
        info = { kind = "sender" }
        state.sender = payload  -- the next frame, the text, belongs to this sender
    else
        info = { kind = "text", sender = state.sender }
    end
    frames[key] = info
    return info
end

-- Several frames may share a packet (and TCP may call us twice for one): the Info column
-- lists them all. pinfo.private lives as long as the dissection of one packet.
local function add_info(pinfo, text)
    if pinfo.private.chatsock_info then
        pinfo.cols.info:append(", " .. text)
    else
        pinfo.cols.info:set(text)
        pinfo.private.chatsock_info = "1"
    end
end

-- One complete frame at `offset` (its `length`-byte payload follows the 10-byte header).
local function dissect_frame(tvb, pinfo, tree, offset, length, state, to_client)
    local payload_range = tvb:range(offset + 10, length)
    local payload = length > 0 and payload_range:string(ENC_UTF_8) or ""
    local key = pinfo.number .. ":" .. tvb:offset() .. ":" .. offset
    local info = classify(key, state, to_client, payload)
    local sender = (info.kind == "sender") and payload or info.sender
    local is_notice = sender ~= nil and sender == chatsock.prefs.server_name

    local sub = tree:add(chatsock, tvb:range(offset, 10 + length))
    sub:add(f.length, tvb:range(offset, 10), length)
       :append_text(' (header "' .. tvb:range(offset, 10):raw() .. '")')
    if length > 0 then sub:add(f.payload, payload_range, payload) end
    sub:add(f.direction, to_client and "server-to-client" or "client-to-server"):set_generated()
    sub:add(f.kind, info.kind):set_generated()

    local shown = '"' .. escape(payload, true) .. '"'
    if info.kind == "username" then
        sub:add(f.username, payload_range, payload)
        add_info(pinfo, "username " .. shown)
    elseif info.kind == "message" then
        sub:add(f.text, payload_range, payload)
        add_info(pinfo, "message " .. shown)
    else
        -- The sender of a text frame was in an earlier frame, perhaps an earlier packet: it
        -- is shown here too (generated, no bytes) so that a filter on it finds the text.
        if info.kind == "sender" then
            sub:add(f.sender, payload_range, payload)
            pinfo.private.chatsock_from = shown  -- in Info with its text, if that is here too
        else
            sub:add(f.sender, sender or "?"):set_generated()
            sub:add(f.text, payload_range, payload)
            pinfo.private.chatsock_from = nil
            add_info(pinfo, (is_notice and "notice " or escape(sender or "?", true) .. ": ")
                            .. shown)
        end
        sub:add(f.notice, is_notice):set_generated()
    end
    sub:append_text(string.format(", %s: %s", info.kind, shown))
end

-- After a bad header the stream cannot be resynchronised (the server closes it), so nothing
-- after it in that direction is read as frames.
local function bad_frame(tvb, pinfo, tree, offset, state, to_client, expert_field, message)
    local sub = tree:add(chatsock, tvb:range(offset))
    sub:append_text(", protocol error")
    sub:add(f.direction, to_client and "server-to-client" or "client-to-server"):set_generated()
    sub:add_proto_expert_info(expert_field, message)
    add_info(pinfo, "[" .. message .. "]")
    if not pinfo.visited and not state.broken then state.broken = pinfo.number end
end

-- The frames in `tvb`, one after the other, until the bytes run out or a header is bad.
local function dissect_frames(tvb, pinfo, tree, state, to_client)
    local offset, total = 0, tvb:len()
    while offset < total do
        -- Not even a whole header yet: ask TCP for the next segment and come back.
        if total - offset < 10 then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            return
        end
        local header = tvb:range(offset, 10):raw()
        local length = header_length(header)
        if not length then
            -- Right at the start of a connection, more likely another wire format than a bug.
            local hint = (state.count == 0) and " (a line or WebSocket connection?)" or ""
            return bad_frame(tvb, pinfo, tree, offset, state, to_client, e_bad_header,
                             'bad frame header "' .. escape(header) .. '"' .. hint)
        end
        if length > chatsock.prefs.max_payload then
            return bad_frame(tvb, pinfo, tree, offset, state, to_client, e_too_long, string.format(
                             "frame of %d bytes is over the limit of %d", length,
                             chatsock.prefs.max_payload))
        end
        -- The header is whole but the payload is not: tell TCP exactly how many bytes are
        -- missing. It calls us again, with this frame reassembled, in the packet completing it.
        if total - offset < 10 + length then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = 10 + length - (total - offset)
            return
        end
        dissect_frame(tvb, pinfo, tree, offset, length, state, to_client)
        offset = offset + 10 + length
    end
end

function chatsock.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "chatsock"
    local to_client = pinfo.src_port == chatsock.prefs.port
    local stream_key = string.format("%s:%d>%s:%d", tostring(pinfo.src), pinfo.src_port,
                                     tostring(pinfo.dst), pinfo.dst_port)
    local state = streams[stream_key]
    if not state then
        state = { count = 0 }
        streams[stream_key] = state
    end
    if state.broken and pinfo.number > state.broken then
        tree:add(chatsock, tvb:range()):append_text(" (not framed: after a bad header)")
        add_info(pinfo, "[not framed: after a bad header]")
    else
        dissect_frames(tvb, pinfo, tree, state, to_client)
    end
    -- A sender whose text is in a later packet still gets a word in this packet's Info.
    if pinfo.private.chatsock_from then
        add_info(pinfo, "from " .. pinfo.private.chatsock_from)
        pinfo.private.chatsock_from = nil
    end
    -- All of it is ours (TCP keeps what desegment_offset asked for, to give it back later).
    return tvb:len()
end

-- The port is a preference, so the registration follows it: Wireshark calls prefs_changed
-- after the user edits a preference and after -o on tshark's command line.
local tcp_port_table = DissectorTable.get("tcp.port")
local registered_port
local function register_port()
    if chatsock.prefs.port == registered_port then return end
    if registered_port then tcp_port_table:remove(registered_port, chatsock) end
    registered_port = chatsock.prefs.port
    tcp_port_table:add(registered_port, chatsock)
end
chatsock.prefs_changed = register_port
register_port()

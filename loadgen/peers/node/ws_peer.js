// Peer server: Node `ws`; fan-out by serializing once and ws.send() to each member.
'use strict';
const { WebSocketServer } = require('ws');

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const sessions = new Map(); // sessionId -> { seq, members: Map<ws, userId> }
let nextUser = 1;

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('listening', () => console.log(`PORT ${wss.address().port}`));
wss.on('connection', (ws) => {
  const userId = `u${nextUser++}`;
  const joined = new Set();
  ws.on('message', (raw) => {
    let msg;
    try { msg = JSON.parse(raw); } catch { ws.send('{"type":"error","message":"bad json"}'); return; }
    const session = sessions.get(msg.sessionId);
    switch (msg.type) {
      case 'session:join': {
        let s = session;
        if (!s) { s = { seq: 0, members: new Map() }; sessions.set(msg.sessionId, s); }
        s.members.set(ws, userId);
        joined.add(msg.sessionId);
        ws.send(JSON.stringify({ type: 'session:joined', sessionId: msg.sessionId, seq: s.seq,
          participants: [...new Set(s.members.values())], presence: {} }));
        break;
      }
      case 'event:publish': {
        if (!session) { ws.send('{"type":"error","message":"not joined"}'); return; }
        session.seq += 1;
        const text = JSON.stringify({ type: 'event', sessionId: msg.sessionId, seq: session.seq,
          name: msg.name, data: msg.data, userId, ts: Date.now() });
        for (const member of session.members.keys()) member.send(text);
        ws.send(JSON.stringify({ type: 'event:ack', ref: msg.ref, sessionId: msg.sessionId, seq: session.seq }));
        break;
      }
      case 'presence:update': {
        if (!session) return;
        const text = JSON.stringify({ type: 'presence', sessionId: msg.sessionId, userId, state: msg.state });
        for (const member of session.members.keys()) if (member !== ws) member.send(text);
        break;
      }
      case 'ping': ws.send('{"type":"pong"}'); break;
      default: break;
    }
  });
  ws.on('close', () => {
    for (const sid of joined) {
      const s = sessions.get(sid);
      if (!s) continue;
      s.members.delete(ws);
      if (s.members.size === 0) sessions.delete(sid);
    }
  });
});
process.on('SIGTERM', () => process.exit(0));

// Peer server: Node socket.io; fan-out via rooms and io.to(room).emit().
// Tandem's messages travel as the payload of one socket.io event named "msg".
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const seqs = new Map(); // sessionId -> last seq
let nextUser = 1;

const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ['websocket'], perMessageDeflate: false });
io.on('connection', (socket) => {
  const userId = `u${nextUser++}`;
  socket.on('msg', (msg) => {
    if (!msg || typeof msg !== 'object') return;
    const sid = msg.sessionId;
    switch (msg.type) {
      case 'session:join': {
        socket.join(sid);
        if (!seqs.has(sid)) seqs.set(sid, 0);
        const members = io.of('/').adapter.rooms.get(sid) || new Set();
        socket.emit('msg', { type: 'session:joined', sessionId: sid, seq: seqs.get(sid),
          participants: [...members], presence: {} });
        break;
      }
      case 'event:publish': {
        if (!socket.rooms.has(sid)) { socket.emit('msg', { type: 'error', message: 'not joined' }); return; }
        const seq = seqs.get(sid) + 1;
        seqs.set(sid, seq);
        io.to(sid).emit('msg', { type: 'event', sessionId: sid, seq, name: msg.name, data: msg.data,
          userId, ts: Date.now() });
        socket.emit('msg', { type: 'event:ack', ref: msg.ref, sessionId: sid, seq });
        break;
      }
      case 'presence:update':
        if (socket.rooms.has(sid)) {
          socket.to(sid).emit('msg', { type: 'presence', sessionId: sid, userId, state: msg.state });
        }
        break;
      case 'ping': socket.emit('msg', { type: 'pong' }); break;
      default: break;
    }
  });
});
httpServer.listen(port, '127.0.0.1', () => console.log(`PORT ${httpServer.address().port}`));
process.on('SIGTERM', () => process.exit(0));

/** A real redis-server for tests: started on a free loopback port with no persistence, stopped by the test. */
export { type RedisServer, startRedis } from "../../deploy/redis-server.ts";

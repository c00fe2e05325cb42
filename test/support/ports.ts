export { freePort } from "../../deploy/free-port.ts";

/** The stories260K checkpoint and tokenizer the repository carries (model-data/), as the tests read them. */
import { fileURLToPath } from "node:url";

export const MODEL_DATA_DIR = fileURLToPath(new URL("../../model-data/tinystories-260k/", import.meta.url));

/** Path of one file of the bundled model data. */
export function modelDataFile(name: "stories260K.bin" | "stories260K.v1.bin" | "tok512.bin"): string {
  return `${MODEL_DATA_DIR}${name}`;
}
